'use strict';
// A throwaway redis-server for the gateways that share one (`switchboard serve --redis URL`): no
// persistence, loopback only, on a free port (never 6379, so a developer's own Redis is safe).
const { spawn } = require('node:child_process');
const net = require('node:net');
const { freePort, waitListening } = require('./ports');

const REDIS_SERVER = process.env.REDIS_SERVER || 'redis-server';

const running = new Set();
process.on('exit', () => { for (const c of running) { try { c.kill('SIGKILL'); } catch (e) { /* gone */ } } });

// PING → +PONG on a fresh connection.
function ping(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`redis on ${port}: no PONG`)); }, 5000);
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      reply += d;
      if (!reply.includes('\r\n')) return;
      clearTimeout(timer);
      socket.destroy();
      if (reply.startsWith('+PONG')) resolve(); else reject(new Error(`redis on ${port}: ${reply.trim()}`));
    });
    socket.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

// Starts redis-server and resolves with { url, port, stop() } once it answers PING.
async function startRedis() {
  let lastError;
  for (let attempt = 0; attempt < 5; attempt++) {
    let port = await freePort();
    while (port === 6379) port = await freePort();
    const args = ['--save', '', '--appendonly', 'no', '--port', String(port), '--bind', '127.0.0.1'];
    const child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let output = '';
    const keep = (d) => { output = (output + d).slice(-20000); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const spawnError = new Promise((resolve, reject) => child.once('error', (e) => reject(new Error(`cannot run ${REDIS_SERVER} (${e.message}): install Debian's redis-server package, or set REDIS_SERVER`))));
    child.once('exit', () => running.delete(child));
    try {
      await Promise.race([waitListening(port, child, { details: () => output }), spawnError]);
      await ping(port);
    } catch (e) {
      child.kill('SIGKILL');
      lastError = e;
      if (/already in use/i.test(output)) continue;
      throw e;
    }
    return {
      url: `redis://127.0.0.1:${port}`,
      port,
      output: () => output,
      stop: () => new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) { resolve(); return; }
        child.once('exit', () => resolve());
        child.kill('SIGKILL'); // nothing to save
      }),
    };
  }
  throw lastError;
}

module.exports = { startRedis };
