// socket.io-client in a page: connect, join a room (an application event), receive, publish.
import { io } from 'socket.io-client';

const socket = io('https://example.invalid');
socket.on('message', (data) => console.log(data));
socket.emit('join', 'chat/lobby', { name: 'ada' });
socket.emit('publish', 'chat/lobby', { text: 'hello' }, (ack) => console.log(ack));
