'use strict';
// Free loopback ports, and waiting for a process to listen on one.
const net = require('node:net');

// A port that was free a moment ago (another process may take it before ours binds it: callers
// that pass it to a child process retry on "address in use").
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function connects(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => { socket.destroy(); resolve(false); });
  });
}

// Resolves when 127.0.0.1:port accepts a connection; rejects when `child` exits first or after
// `timeoutMs` (the error says which, with `details()`).
async function waitListening(port, child, { timeoutMs = 10000, details = () => '' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`exited (${child.exitCode ?? child.signalCode}) before listening on port ${port}\n${details()}`);
    }
    if (await connects(port)) return;
    if (Date.now() > deadline) throw new Error(`not listening on port ${port} after ${timeoutMs} ms\n${details()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

module.exports = { freePort, waitListening };
