// duplex-ws in a page (its browser entry): join a room with presence, receive and publish.
import { DuplexClient, init } from 'duplex-ws';
import wasmUrl from 'duplex-ws/duplex_ws.wasm';

await init(wasmUrl);
const client = new DuplexClient('wss://example.invalid/ws');
const room = await client.join('chat/lobby', { presence: { name: 'ada' } });
room.on('message', (message) => console.log(message.data));
room.on('join', () => console.log([...room.members.keys()]));
await room.publish({ text: 'hello' });
