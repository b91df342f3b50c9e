#!/usr/bin/env node
// Test-only MongoDB-compatible server: runs CongoDB (the wire-protocol server
// shipped in @push.rocks/smartmongo@2.2.0) with in-memory storage.
//
//   node server.mjs --port N [--host 127.0.0.1]
//
// Prints exactly one line "listening HOST:PORT" on stdout once the TCP socket
// accepts connections (with --port 0 the OS picks a free port and the real one
// is printed). Everything else goes to stderr. Stops on SIGTERM/SIGINT.
//
// Expects to live next to the unpacked tarball (./package/dist_ts/...) and a
// node_modules with its runtime deps, as laid out by install.sh. Set
// CONGODB_HOME to point at such an install directory from elsewhere.
import path from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';

function usage(msg) {
  if (msg) process.stderr.write(`server.mjs: ${msg}\n`);
  process.stderr.write('usage: node server.mjs --port N [--host 127.0.0.1] [--stock-hello]\n');
  process.exit(2);
}

let host = '127.0.0.1';
let port = null;
let stockHello = false;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const eq = a.indexOf('=');
  const [name, inline] = eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, undefined];
  const value = () => {
    if (inline !== undefined) return inline;
    if (i + 1 >= argv.length) usage(`${name} needs a value`);
    return argv[++i];
  };
  if (name === '--port') port = value();
  else if (name === '--host') host = value();
  else if (name === '--stock-hello') stockHello = true;
  else if (name === '-h' || name === '--help') usage();
  else usage(`unknown argument: ${a}`);
}
if (port === null) usage('--port is required');
if (!/^\d+$/.test(port) || Number(port) > 65535) usage(`bad port: ${port}`);
port = Number(port);

// Signal handlers go in first, so a stop request that arrives while CongoDB
// is still loading is not lost (the process just exits).
let server = null;
let stopping = false;
async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`server.mjs: ${signal}, stopping\n`);
  if (!server) process.exit(0);
  const force = setTimeout(() => {
    process.stderr.write('server.mjs: stop timed out, exiting\n');
    process.exit(0);
  }, 5000);
  force.unref();
  try {
    await server.stop();
  } catch (err) {
    process.stderr.write(`server.mjs: error while stopping: ${err?.message ?? err}\n`);
  }
  process.exit(0);
}
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => shutdown(sig));

const home = process.env.CONGODB_HOME
  ? path.resolve(process.env.CONGODB_HOME)
  : path.dirname(fileURLToPath(import.meta.url));
const entry = path.join(home, 'package', 'dist_ts', 'congodb', 'index.js');

let CongoServer, ObjectId, Long;
try {
  ({ CongoServer, ObjectId, Long } = await import(pathToFileURL(entry).href));
} catch (err) {
  process.stderr.write(`server.mjs: cannot load CongoDB from ${entry}: ${err?.message ?? err}\n` +
    'server.mjs: run install.sh DEST_DIR and start DEST_DIR/server.mjs\n');
  process.exit(1);
}

const congo = new CongoServer({ host, port, storage: 'memory' });
if (!stockHello) patchHello(congo);
try {
  await congo.start();
} catch (err) {
  process.stderr.write(`server.mjs: failed to listen on ${host}:${port}: ${err?.message ?? err}\n`);
  process.exit(1);
}

// CongoServer.port returns the configured port (0 stays 0); the real one is on
// the underlying net.Server, which CongoServer keeps in its `server` field.
server = congo;
const addr = congo.server?.address?.();
const realPort = addr && typeof addr === 'object' ? addr.port : port;
process.stdout.write(`listening ${host}:${realPort}\n`);
process.stderr.write(`server.mjs: CongoDB (smartmongo 2.2.0, memory storage) pid ${process.pid} on ${host}:${realPort}\n`);


// Awaitable hello. CongoDB 2.2.0 answers every hello at once and puts a new
// topologyVersion.processId in each answer. Drivers that see a topologyVersion
// (pymongo, the Rust driver: serverMonitoringMode=auto/stream) then stream
// hellos back to back: measured ~6,000 heartbeats/s and ~1 CPU core per idle
// client. Real servers hold such a hello (one carrying topologyVersion and
// maxAwaitTimeMS) until the topology changes or maxAwaitTimeMS passes, and
// keep one processId per process. Do the same; --stock-hello turns this off.
function patchHello(congo) {
  const handlers = congo.commandRouter?.handlers;
  const hello = handlers?.get?.('hello');
  if (!hello || typeof hello.handle !== 'function') {
    process.stderr.write('server.mjs: warning: cannot find the hello handler, awaitable hello not enabled\n');
    return;
  }
  const processId = new ObjectId();
  const original = hello.handle.bind(hello);
  const toNumber = (v) => (v && typeof v === 'object' && typeof v.toNumber === 'function' ? v.toNumber() : Number(v));
  hello.handle = async (context) => {
    const { command } = context;
    const tv = command?.topologyVersion;
    const maxAwait = toNumber(command?.maxAwaitTimeMS);
    if (tv && Number.isFinite(maxAwait) && maxAwait > 0 &&
        String(tv.processId) === processId.toHexString()) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(maxAwait, 60000)).unref());
    }
    const response = await original(context);
    response.topologyVersion = { processId, counter: Long.fromNumber(0) };
    return response;
  };
  // The same handler object serves 'hello', 'isMaster' and 'ismaster'.
  for (const name of ['isMaster', 'ismaster']) {
    if (handlers.get(name) !== hello) {
      process.stderr.write(`server.mjs: warning: '${name}' is not served by the hello handler\n`);
    }
  }
}
