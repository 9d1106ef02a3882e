// The page both bundlers build: joins a room of `duplex serve` with DuplexClient (the browser
// entry of duplex-ws, over the browser's WebSocket), publishes a message and waits for it to
// come back from the server. The server and the room come from the query string
// (?ws=ws://127.0.0.1:PORT/ws&room=bundle/NAME); the outcome goes to window.bundleResult and
// the page's text, for check.mjs.
import { DuplexClient, SUBPROTOCOL, init } from 'duplex-ws';

const show = (text) => {
  document.getElementById('status').textContent = text;
};

export async function run(wasmSource) {
  const params = new URLSearchParams(location.search);
  const started = performance.now();
  try {
    await init(wasmSource);
    const client = new DuplexClient(params.get('ws'));
    const opened = new Promise((resolve) => client.on('open', resolve));
    const room = await client.join(params.get('room'), { presence: { page: document.title } });
    const { clientId } = await opened;
    const text = `hello from ${document.title} ${Math.random()}`;
    const received = new Promise((resolve) => room.on('message', resolve));
    const seq = await room.publish({ text });
    const message = await received;
    client.close();
    window.bundleResult = {
      ok: true,
      subprotocol: SUBPROTOCOL,
      clientId,
      seq,
      sent: text,
      received: message,
      members: [...room.members.keys()],
      ms: Math.round(performance.now() - started),
    };
    show(`ok: message ${message.seq} came back`);
  } catch (error) {
    window.bundleResult = { ok: false, error: String(error?.stack ?? error) };
    show(`failed: ${error}`);
  }
}
