'use strict';
// A TCP proxy between the browser and the gateway, so that a test can cut every live
// connection (WebSocket, SSE stream, held poll) from the server side and refuse new ones for a
// while, without restarting the gateway (a restart would lose its history).
const net = require('node:net');

class TcpProxy {
  constructor(targetPort, targetHost = '127.0.0.1') {
    this.targetPort = targetPort;
    this.targetHost = targetHost;
    this.pairs = new Set();
    this.refusing = false;
    this.accepted = 0;
    this.server = net.createServer((client) => this._accept(client));
  }

  listen() {
    return new Promise((resolve) => {
      this.server.listen(0, '127.0.0.1', () => {
        this.port = this.server.address().port;
        this.url = `http://127.0.0.1:${this.port}`;
        resolve(this);
      });
    });
  }

  _accept(client) {
    this.accepted++;
    if (this.refusing) { client.destroy(); return; }
    const upstream = net.connect(this.targetPort, this.targetHost);
    const pair = { client, upstream };
    this.pairs.add(pair);
    const end = () => { this.pairs.delete(pair); client.destroy(); upstream.destroy(); };
    client.on('error', end); upstream.on('error', end);
    client.on('close', end); upstream.on('close', end);
    client.pipe(upstream); upstream.pipe(client);
  }

  // Cuts every open connection (both directions, like a dropped network path).
  cut() {
    const n = this.pairs.size;
    for (const { client, upstream } of this.pairs) { client.destroy(); upstream.destroy(); }
    this.pairs.clear();
    return n;
  }

  // Cuts everything and refuses new connections until up().
  down() { this.refusing = true; return this.cut(); }
  up() { this.refusing = false; }

  close() {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

module.exports = { TcpProxy };
