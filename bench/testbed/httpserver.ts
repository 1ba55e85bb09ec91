// The service of the scalability test: a node:http server in the hub's pod namespace that
// answers every call with a small JSON document (what a service call in the cluster returns).
//
//   node httpserver.js PORT        prints "listening" when ready; ends on SIGTERM.
import { createServer } from "node:http";

const port = Number(process.argv[2] ?? 8080);
const body = Buffer.from(
  JSON.stringify({ service: "edgetun-testbed", items: Array.from({ length: 16 }, (_, i) => i) }),
);

const server = createServer((request, response) => {
  request.resume();
  request.on("end", () => {
    response.writeHead(200, {
      "content-type": "application/json",
      "content-length": body.length,
    });
    response.end(body);
  });
});
// Up to 1000 connections arrive within a moment: a backlog large enough for all of them.
server.keepAliveTimeout = 30_000;
server.listen({ port, host: "0.0.0.0", backlog: 4096 }, () => {
  process.stdout.write("listening\n");
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
