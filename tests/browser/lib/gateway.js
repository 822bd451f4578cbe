'use strict';
// Starts real gateway processes for the browser tests.
const { spawn } = require('node:child_process');
const path = require('node:path');
const fs = require('node:fs');

const REPO = path.resolve(__dirname, '..', '..', '..');

// Gateways still running when this test process exits (a failed or interrupted run) are killed.
const running = new Set();
process.on('exit', () => { for (const c of running) { try { c.kill('SIGKILL'); } catch (e) { /* gone */ } } });

function binary() {
  if (process.env.SWITCHBOARD_BIN) return process.env.SWITCHBOARD_BIN;
  const target = process.env.CARGO_TARGET_DIR ? path.resolve(REPO, process.env.CARGO_TARGET_DIR) : path.join(REPO, 'target');
  return path.join(target, 'debug', 'switchboard');
}

// Spawns `switchboard serve --listen 127.0.0.1:0 --static-dir <repo>/static [args]` and waits
// for "switchboard listening on http://ADDR" on stdout. `listen` replaces the address, for a
// gateway started again where the browsers knew it.
function startGateway(args = [], { timeoutMs = 20000, listen = '127.0.0.1:0' } = {}) {
  const bin = binary();
  if (!fs.existsSync(bin)) throw new Error(`gateway binary not found at ${bin}: run cargo build -p switchboard`);
  const argv = ['serve', '--listen', listen, '--static-dir', path.join(REPO, 'static'), ...args];
  const child = spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } });
  running.add(child);
  child.on('exit', () => running.delete(child));
  let stderr = '';
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-20000); });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`gateway did not report "listening on" within ${timeoutMs} ms\n${stderr}`)); }, timeoutMs);
    const onData = (d) => {
      out += d;
      const m = /switchboard listening on (http:\/\/\S+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.stdout.off('data', onData);
      child.stdout.resume();
      const url = m[1].replace(/\/+$/, '');
      resolve({
        url,
        port: Number(new URL(url).port),
        child,
        stderr: () => stderr,
        stop: () => stopChild(child),
        kill: () => killChild(child),
        health: () => health(url),
      });
    };
    child.stdout.on('data', onData);
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited (${code ?? sig}) before listening: ${argv.join(' ')}\n${stderr}`));
    });
  });
}

function stopChild(child, graceMs = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => { clearTimeout(t); resolve(); });
    child.kill('SIGTERM');
  });
}

// SIGKILL, as a crashed or lost node: no close frames, no shutdown. Resolves once it has exited.
function killChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

// The gateway's GET /healthz body (its `connections` counter: open WebSockets, SSE streams and
// held polls).
async function health(baseUrl) {
  const res = await fetch(`${baseUrl}/healthz`);
  if (res.status !== 200) throw new Error(`GET ${baseUrl}/healthz: ${res.status}`);
  return res.json();
}

// Publishes over HTTP, as any non-browser client would.
async function publish(baseUrl, topic, data) {
  const res = await fetch(`${baseUrl}/events?topic=${encodeURIComponent(topic)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(data),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`publish failed: ${res.status} ${JSON.stringify(body)}`);
  return body.id;
}

module.exports = { REPO, startGateway, publish, health, binary };
