// deflate-bench.mjs PAYLOADS.jsonl [--rounds N] [--level L]
//
// permessage-deflate throughput and ratio of the `ws` package, on the same file and in the same
// shape as duplex's bench (benches/deflate_bench.rs): ws's own PerMessageDeflate class, a
// server instance and a client instance that negotiate through ws's extension header parser,
// window bits 15, zlib level 6 and memLevel 8 (duplex's settings; Node's defaults), threshold 0.
// For each mode, with and without server context takeover, the server compresses every message
// in order (each `compress` waits for the previous one, as ws's Sender does on one socket), then
// the client decompresses the results in order. Each round starts on fresh instances; every
// round's output is checked against the input.
//
// Node's zlib runs each call on libuv's thread pool and calls back on the main thread, so on
// one socket every message pays that round trip besides the zlib work (Node has no synchronous
// API for a deflate stream that keeps its context).
//
// Prints one JSON line on stdout (the same fields as duplex's bench), a summary on stderr.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { PerMessageDeflate, extension } from 'ws';

const MODES = [['context-takeover', false], ['no-context-takeover', true]];
const WINDOW_BITS = 15;

function usage(message) {
  if (message) console.error(`deflate-bench.mjs: ${message}`);
  console.error('usage: node deflate-bench.mjs PAYLOADS.jsonl [--rounds N] [--level 0..9]');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { path: null, rounds: 5, level: 6 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--rounds' || a === '--level') {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) usage(`${a} needs a number`);
      if (a === '--rounds') opts.rounds = Math.max(1, v);
      else if (v > 9) usage('--level is 0..9');
      else opts.level = v;
    } else if (!a.startsWith('-') && !opts.path) {
      opts.path = a;
    } else {
      usage(`unexpected argument ${a}`);
    }
  }
  if (!opts.path) usage('no payload file');
  return opts;
}

function load(path) {
  const data = readFileSync(path);
  const messages = [];
  let start = 0;
  while (start < data.length) {
    let end = data.indexOf(0x0a, start);
    if (end < 0) end = data.length;
    if (end > start) messages.push(Buffer.from(data.subarray(start, end)));
    start = end + 1;
  }
  if (!messages.length) throw new Error(`${path}: no messages`);
  return messages;
}

// A server and a client PerMessageDeflate that agreed on the mode, through the headers a
// handshake would carry.
function openPair(serverNoContextTakeover, level) {
  const common = { threshold: 0, zlibDeflateOptions: { level, memLevel: 8 } };
  const client = new PerMessageDeflate({ ...common });
  const server = new PerMessageDeflate({ ...common, isServer: true, serverNoContextTakeover });
  const request = extension.format({ [PerMessageDeflate.extensionName]: client.offer() });
  const accepted = server.accept(extension.parse(request)[PerMessageDeflate.extensionName]);
  const response = extension.format({ [PerMessageDeflate.extensionName]: accepted });
  client.accept(extension.parse(response)[PerMessageDeflate.extensionName]);
  if (!!client.params.server_no_context_takeover !== serverNoContextTakeover) {
    throw new Error(`negotiated '${response}', not the mode asked for`);
  }
  const windowBits = server.params.server_max_window_bits ?? WINDOW_BITS;
  if (windowBits !== WINDOW_BITS) throw new Error(`negotiated '${response}': window bits ${windowBits}`);
  return {
    compress: (d, fin, cb) => server.compress(d, fin, cb),
    decompress: (d, fin, cb) => client.decompress(d, fin, cb),
    close: () => {
      server.cleanup();
      client.cleanup();
    },
  };
}

// Runs `op(input, true, callback)` on every input in turn, each call from the previous one's
// callback (always asynchronous: zlib calls back from the event loop); resolves with the outputs.
function each(op, inputs) {
  return new Promise((resolve, reject) => {
    const out = new Array(inputs.length);
    let i = 0;
    const step = (err, data) => {
      if (err) return reject(err);
      out[i++] = data;
      if (i === inputs.length) return resolve(out);
      op(inputs[i], true, step);
    };
    op(inputs[0], true, step);
  });
}

async function round(messages, serverNoContextTakeover, level) {
  const pair = openPair(serverNoContextTakeover, level);
  try {
    let start = performance.now();
    const compressed = await each(pair.compress, messages);
    const compress = (performance.now() - start) / 1000;
    start = performance.now();
    const inflated = await each(pair.decompress, compressed);
    const decompress = (performance.now() - start) / 1000;
    for (let i = 0; i < messages.length; i++) {
      if (!messages[i].equals(inflated[i])) throw new Error(`message ${i}: the inflated message differs from the one sent`);
    }
    return { compress, decompress, sizes: compressed.map((b) => b.length) };
  } finally {
    pair.close();
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const messages = load(opts.path);
  const raw = messages.reduce((n, m) => n + m.length, 0);
  const wsVersion = createRequire(import.meta.url)('ws/package.json').version;
  const result = {
    label: 'ws',
    codec: `node zlib ${process.versions.zlib} through ws ${wsVersion}'s PerMessageDeflate (node ${process.version})`,
    level: opts.level, window_bits: WINDOW_BITS, messages: messages.length, raw_bytes: raw,
    rounds: opts.rounds, modes: {},
  };
  for (const [name, noTakeover] of MODES) {
    const mode = { compressed_bytes: 0, compress_s: [], decompress_s: [], sizes: null };
    for (let r = 0; r < opts.rounds; r++) {
      const { compress, decompress, sizes } = await round(messages, noTakeover, opts.level);
      if (mode.sizes && sizes.some((s, i) => s !== mode.sizes[i])) throw new Error(`${name}: compressed sizes differ between rounds`);
      mode.compress_s.push(compress);
      mode.decompress_s.push(decompress);
      mode.sizes = sizes;
    }
    mode.compressed_bytes = mode.sizes.reduce((n, s) => n + s, 0);
    const mbps = (list) => (raw / Math.min(...list) / 1e6).toFixed(1);
    console.error(`${result.label} ${name}: ratio ${(mode.compressed_bytes / raw).toFixed(4)}, compress ${mbps(mode.compress_s)} MB/s, decompress ${mbps(mode.decompress_s)} MB/s (best of ${opts.rounds})`);
    result.modes[name] = mode;
  }
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.error(`deflate-bench.mjs: FAIL: ${e.message}`);
  process.exit(1);
});
