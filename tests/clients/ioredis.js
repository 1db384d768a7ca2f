// Drives ioredis the way an app would and prints one JSON line of what the
// library did, for tests/libraries.rs (through tests/common/clients.rs).
//
//   node ioredis.js --host H --port P [--tls-ca CA] [--user U] [--password PW]
//                   SCENARIO WORD...
//
// Scenarios, each running the command WORD... (e.g. `GET k`):
//   command  create the client (it connects and sends its handshake) and
//            run the command once: {"result": R}
//   kill     run it, learn the connection's CLIENT ID, kill that connection
//            with CLIENT KILL ID from a second client at the same address,
//            wait for the first client's "close" event, then run the command
//            again (ioredis reconnects on its own):
//            {"before": R, "killed": R, "after": R}
// where R is {"reply": <reply>} or {"error": {"class", "message"}}. Every
// "error" event the client emitted is listed in "events", in order.
//
// ioredis comes from tests/clients/node_modules (scripts/deps.sh, npm ci),
// which Node finds from this file's directory.
"use strict";

const fs = require("fs");
const { parseArgs, errorOf, bounded, print } = require("./common.js");
const Redis = require("ioredis");

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const events = [];
  const options = {
    host: a.host,
    port: a.port,
    username: a.user,
    password: a.password,
    // Bounded below the harness's timeout, so a stall is reported, not killed.
    connectTimeout: 5000,
    // One reconnect per command (default 20, about 20 s of retries) so a
    // failing connection is reported within a second; the rest are the
    // defaults, pinned so a change of default shows here.
    maxRetriesPerRequest: 1,
    enableReadyCheck: true,
    enableOfflineQueue: true,
  };
  if (a.tlsCa) {
    options.tls = { ca: fs.readFileSync(a.tlsCa), servername: "localhost" };
  }
  const client = new Redis(options);
  client.on("error", (e) => events.push(errorOf(e)));
  const run = async (c, words) => {
    try {
      return { reply: await bounded(c.call(...words)) };
    } catch (e) {
      return { error: errorOf(e) };
    }
  };

  const out = {};
  if (a.scenario === "command") {
    out.result = await run(client, a.words);
  } else {
    out.before = await run(client, a.words);
    const id = await client.client("ID");
    const closed = new Promise((resolve) => client.once("close", resolve));
    const admin = new Redis(options);
    admin.on("error", () => {});
    out.killed = await run(admin, ["CLIENT", "KILL", "ID", String(id)]);
    admin.disconnect();
    await bounded(closed);
    out.after = await run(client, a.words);
  }
  out.events = events;
  out.library = "ioredis " + require("ioredis/package.json").version;
  client.disconnect();
  print(out);
}

main().catch((e) => {
  print({ crash: errorOf(e), stack: e && e.stack }, 1);
});
