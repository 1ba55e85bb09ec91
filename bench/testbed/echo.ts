// Small TCP request/response, as netperf's TCP_RR measures it: one connection, a request of
// SIZE bytes, the same bytes back, the next request only after the whole answer arrived. What
// it measures is the round trip of one small exchange through the path, back to back.
//
//   node echo.js server PORT [HOST]               prints "listening PORT"; ends on SIGTERM
//   node echo.js client HOST PORT SECONDS SIZE    prints one JSON line: count, mean/p50/p99 µs
import { connect, createServer } from "node:net";

const WARM_UP_MS = 300;

function server(port: number, host: string): void {
  const listener = createServer((socket) => {
    socket.setNoDelay(true);
    socket.on("data", (chunk) => socket.write(chunk));
    socket.on("error", () => socket.destroy());
  });
  listener.listen({ port, host }, () => {
    const address = listener.address();
    process.stdout.write(
      `listening ${typeof address === "object" && address ? address.port : port}\n`,
    );
  });
  const stop = () => listener.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

function client(host: string, port: number, seconds: number, size: number): void {
  const request = Buffer.alloc(size, 0x61);
  const samplesUs: number[] = [];
  const socket = connect({ host, port, noDelay: true });
  let started = 0n;
  let received = 0;
  let measuringFrom = 0;
  let endAt = 0;
  const send = () => {
    received = 0;
    started = process.hrtime.bigint();
    socket.write(request);
  };
  socket.on("connect", () => {
    measuringFrom = Date.now() + WARM_UP_MS;
    endAt = measuringFrom + seconds * 1000;
    send();
  });
  socket.on("data", (chunk) => {
    received += chunk.length;
    if (received < size) return;
    const now = Date.now();
    if (now >= measuringFrom) samplesUs.push(Number(process.hrtime.bigint() - started) / 1000);
    if (now < endAt) {
      send();
      return;
    }
    socket.end();
    samplesUs.sort((a, b) => a - b);
    const at = (q: number) =>
      samplesUs[Math.min(samplesUs.length - 1, Math.ceil(q * samplesUs.length) - 1)] ?? NaN;
    const mean = samplesUs.reduce((a, b) => a + b, 0) / samplesUs.length;
    process.stdout.write(
      `${JSON.stringify({ count: samplesUs.length, perSecond: samplesUs.length / seconds, meanUs: mean, p50Us: at(0.5), p99Us: at(0.99) })}\n`,
    );
  });
  socket.on("error", (error) => {
    process.stderr.write(`echo client: ${error.message}\n`);
    process.exit(1);
  });
}

const [mode, ...args] = process.argv.slice(2);
if (mode === "server") server(Number(args[0]), args[1] ?? "0.0.0.0");
else if (mode === "client")
  client(args[0] ?? "127.0.0.1", Number(args[1]), Number(args[2] ?? 3), Number(args[3] ?? 64));
else {
  process.stderr.write("usage: echo.js server PORT [HOST] | client HOST PORT SECONDS SIZE\n");
  process.exit(2);
}
