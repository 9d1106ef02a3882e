// centrifuge-js (JSON protocol) in a page: subscribe to a channel, receive, publish, presence.
import { Centrifuge } from 'centrifuge';

const client = new Centrifuge('wss://example.invalid/connection/websocket');
const sub = client.newSubscription('chat:lobby');
sub.on('publication', (ctx) => console.log(ctx.data));
sub.on('join', (ctx) => console.log(ctx.info));
sub.subscribe();
client.connect();
await sub.publish({ text: 'hello' });
console.log(await sub.presence());
