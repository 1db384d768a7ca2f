// Drives node-redis (the `redis` npm package) the way an app would and
// prints one JSON line of what the library did, for tests/libraries.rs
// (through tests/common/clients.rs).
//
//   node node_redis.js --host H --port P [--tls-ca CA] [--user U] [--password PW]
//                      SCENARIO WORD...
//
// Scenarios as in ioredis.js: `command` connects (`await connect()`, which
// sends the library's handshake) and runs WORD... once; `kill` runs it, kills
// the connection by CLIENT ID from a second client, waits for the client to
// notice (its "error" or "reconnecting" event), and runs it again. Output:
// {"result": R} or {"before": R, "killed": R, "after": R}, R being
// {"reply": ...} or {"error": {"class", "message"}}, with "stage": "connect"
// when connect() itself failed, every "error" event in "events", and every
// exception nobody caught (a library bug) in "uncaught".
//
// node-redis comes from tests/clients/node_modules (scripts/deps.sh, npm ci).
"use strict";

const fs = require("fs");
const { parseArgs, errorOf, bounded, print } = require("./common.js");
const { createClient } = require("redis");

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const events = [];
  const uncaught = [];
  process.on("uncaughtException", (e) => uncaught.push(errorOf(e)));
  const options = {
    username: a.user,
    password: a.password,
    socket: {
      host: a.host,
      port: a.port,
      connectTimeout: 5000,
      // A fixed short delay (the default grows to 2 s) keeps runs fast.
      reconnectStrategy: () => 50,
    },
  };
  if (a.tlsCa) {
    Object.assign(options.socket, { tls: true, ca: fs.readFileSync(a.tlsCa), servername: "localhost" });
  }
  const run = async (c, words) => {
    try {
      return { reply: await bounded(c.sendCommand(words)) };
    } catch (e) {
      return { error: errorOf(e) };
    }
  };
  const connect = async (c) => {
    try {
      await bounded(c.connect());
      return null;
    } catch (e) {
      return { error: errorOf(e) };
    }
  };

  const client = createClient(options);
  client.on("error", (e) => events.push(errorOf(e)));
  const out = {};
  const failed = await connect(client);
  if (failed) {
    out.result = failed;
    out.stage = "connect";
  } else if (a.scenario === "command") {
    out.result = await run(client, a.words);
  } else {
    out.before = await run(client, a.words);
    const id = await client.sendCommand(["CLIENT", "ID"]);
    const noticed = new Promise((resolve) => {
      client.once("error", resolve);
      client.once("reconnecting", resolve);
    });
    const admin = createClient(options);
    admin.on("error", () => {});
    await connect(admin);
    out.killed = await run(admin, ["CLIENT", "KILL", "ID", String(id)]);
    admin.destroy();
    await bounded(noticed);
    out.after = await run(client, a.words);
  }
  out.events = events;
  out.uncaught = uncaught;
  out.library = "node-redis " + require("redis/package.json").version;
  print(out);
}

main().catch((e) => print({ crash: errorOf(e), stack: e && e.stack }, 1));
