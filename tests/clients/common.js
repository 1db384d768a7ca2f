// What the Node client scripts share: their argv, error rendering, a
// deadline on every wait, and the one JSON line they print.
"use strict";

// Every wait is bounded below the harness's own timeout (20 s), so a stall
// shows in the JSON as {"class": "Timeout"} instead of a killed child.
const WAIT_MS = 8000;

/// `--host H --port P [--tls-ca CA] [--user U] [--password PW] SCENARIO WORD...`
function parseArgs(argv) {
  const a = { words: [] };
  const flags = { "--host": "host", "--port": "port", "--tls-ca": "tlsCa", "--user": "user", "--password": "password" };
  for (let i = 0; i < argv.length; i++) {
    const key = flags[argv[i]];
    if (key) {
      a[key] = argv[++i];
    } else if (a.scenario === undefined) {
      a.scenario = argv[i];
    } else {
      a.words.push(argv[i]);
    }
  }
  a.port = Number(a.port);
  if (!a.host || !a.port || !["command", "kill"].includes(a.scenario) || a.words.length === 0) {
    throw new Error("usage: --host H --port P [--tls-ca CA] [--user U] [--password PW] command|kill WORD...");
  }
  return a;
}

function errorOf(e) {
  if (!(e instanceof Error)) {
    return { class: typeof e, message: String(e) };
  }
  return { class: e.constructor.name, message: e.message };
}

class Timeout extends Error {}

/// `promise`, or a rejection with class Timeout after WAIT_MS.
function bounded(promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Timeout(`no answer within ${WAIT_MS} ms`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/// Prints the one JSON line and exits, so no reconnect timer keeps Node up.
function print(out, code = 0) {
  process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(code));
}

module.exports = { parseArgs, errorOf, bounded, print };
