// A Socket.IO 4 node with @socket.io/redis-adapter: the cross-node peer of `duplex serve
// --broker redis://` for benches/cluster.sh, driven by `duplex-load --mode fanout --protocol
// socketio`. Several of these processes on one redis-server serve one set of rooms.
//
//   node socketio-room.mjs PORT REDIS_URL
//
// Events (Engine.IO v4 over WebSocket, no long-polling, no compression):
//   join    {id, room}         -> ack {type: "joined", id, room, seq: 0}; the socket joins the room
//   publish {id, room, data}   -> the room (on every node, through Redis) gets the event
//                                 "message" {type: "message", room, seq, from, data}; ack
//                                 {type: "ack", id, seq}
// `seq` counts the publishes this node relayed for the room (the benchmark has one publisher,
// on one node): Socket.IO has no room sequence of its own, and this one costs a Map lookup.
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const port = Number(process.argv[2] || 0);
const redisUrl = process.argv[3];
if (!port || !redisUrl) {
  console.error("usage: node socketio-room.mjs PORT REDIS_URL");
  process.exit(2);
}

const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
for (const c of [pub, sub]) c.on("error", (e) => console.error("redis:", e.message));
await Promise.all([pub.connect(), sub.connect()]);

const http = createServer();
const io = new Server(http, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
  maxHttpBufferSize: 1 << 20,
  adapter: createAdapter(pub, sub),
});

const seqs = new Map();
io.on("connection", (socket) => {
  socket.on("join", (msg, ack) => {
    socket.join(msg.room);
    if (typeof ack === "function") ack({ type: "joined", id: msg.id, room: msg.room, seq: 0 });
  });
  socket.on("publish", (msg, ack) => {
    const seq = (seqs.get(msg.room) || 0) + 1;
    seqs.set(msg.room, seq);
    io.to(msg.room).emit("message", {
      type: "message",
      room: msg.room,
      seq,
      from: socket.id,
      data: msg.data,
    });
    if (typeof ack === "function") ack({ type: "ack", id: msg.id, seq });
  });
});

http.listen(port, "127.0.0.1", () => console.log(`socket.io listening on 127.0.0.1:${port}`));
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
  });
}
