// The real socket.io-client against nubi: authenticate, subscribe to a raid, report the first join.
// Usage: node socketio_client.mjs <url> <apiKey> <raidId>; prints one JSON object per line.
import { io } from "socket.io-client";

const [url, apiKey, raidId] = process.argv.slice(2);
const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const socket = io(url, { transports: ["websocket"], reconnection: false, timeout: 5000 });

const fail = (message) => {
  out({ step: "error", message });
  socket.close();
  process.exit(1);
};
const timer = setTimeout(() => fail("timed out waiting for a join"), 15000);

socket.on("connect_error", (err) => fail(`connect_error: ${err.message}`));
socket.on("raid:update", (msg) => {
  if (msg.type !== "participant_joined") return;
  out({ step: "event", msg });
  clearTimeout(timer);
  socket.close();
});
socket.on("connect", async () => {
  try {
    out({ step: "authenticated", ack: await socket.timeout(5000).emitWithAck("session:authenticate", { apiKey }) });
    out({ step: "subscribed", ack: await socket.timeout(5000).emitWithAck("raid:subscribe", { raidId: Number(raidId) }) });
  } catch (err) {
    fail(String(err));
  }
});
