'use strict';
// A real nginx running the shipped site file for several nodes, deploy/nginx-cluster.conf, in
// front of local gateways: the same rewrite as tests/support/nginx.rs (`Nginx::start_cluster`).
// The site file is used as is except for its `listen 80` (a free loopback port) and the `server`
// lines of its upstream (one per local node, with the parameters the file gives its nodes). What
// nginx needs to run unprivileged in a temporary prefix lives in a small main configuration that
// includes the site, as Debian's nginx.conf includes conf.d/*.conf.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { REPO } = require('./gateway');
const { freePort, waitListening } = require('./ports');

const NGINX = process.env.NGINX || '/usr/sbin/nginx';
const CLUSTER_SITE_FILE = path.join(REPO, 'deploy', 'nginx-cluster.conf');

const running = new Set();
process.on('exit', () => { for (const c of running) { try { c.kill('SIGKILL'); } catch (e) { /* gone */ } } });

// `site` with its one `listen 80` on 127.0.0.1:listenPort and the `server` lines of its one
// upstream replaced by one `server 127.0.0.1:PORT <parameters>;` per upstream port. Throws if the
// file does not have exactly one of each, or gives its nodes different parameters (then this
// function and the file have drifted apart).
function rewriteClusterSite(site, listenPort, upstreamPorts) {
  if (upstreamPorts.length === 0) throw new Error('nginx needs at least one node');
  let listens = 0;
  let upstreams = 0;
  let inUpstream = false;
  let nodeParameters = null;
  const out = [];
  for (const line of site.split('\n')) {
    const code = line.split('#')[0];
    const indent = line.slice(0, line.length - line.trimStart().length);
    const words = code.split(/\s+/).filter(Boolean);
    if (words.length === 3 && words[0] === 'upstream' && words[2] === '{') { upstreams++; inUpstream = true; }
    if (words.length === 1 && words[0] === '}') inUpstream = false;
    if (words[0] === 'listen' && words[1] && words[1].replace(/;$/, '') === '80') {
      listens++;
      const end = words[1].endsWith(';') ? ';' : '';
      const rest = words.slice(2);
      out.push(`${indent}listen 127.0.0.1:${listenPort}${end}${rest.length ? ' ' + rest.join(' ') : ''}`);
    } else if (words[0] === 'server' && words.length >= 2 && inUpstream) {
      const parameters = words.slice(2).map((p) => p.replace(/;$/, '')).filter(Boolean);
      if (nodeParameters === null) {
        nodeParameters = parameters;
        for (const port of upstreamPorts) out.push(`${indent}server 127.0.0.1:${port}${parameters.map((p) => ' ' + p).join('')};`);
      } else if (parameters.join(' ') !== nodeParameters.join(' ')) {
        throw new Error(`${CLUSTER_SITE_FILE}: every node's \`server\` line should have the same parameters`);
      }
    } else {
      out.push(line);
    }
  }
  if (listens !== 1 || upstreams !== 1 || nodeParameters === null) {
    throw new Error(`${CLUSTER_SITE_FILE} must have exactly one \`listen 80 ...;\` and one \`upstream NAME {\` with \`server\` lines ` +
      `(found ${listens} listen, ${upstreams} upstream, servers: ${nodeParameters !== null})`);
  }
  return out.join('\n');
}

// The main configuration around the site file, as in tests/support/nginx.rs (one process, temp
// paths in the prefix, gzip on and X-Accel-Buffering ignored so that the site itself must turn
// them off), plus an access log that names the node that served each request.
function mainConfig(dir) {
  return `# Written by tests/browser/lib/nginx.js; the site file is deploy/nginx-cluster.conf, rewritten.
daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events {
    worker_connections 1024;
}
http {
    log_format upstream '$remote_addr "$request" $status upstream=$upstream_addr $upstream_status';
    access_log ${dir}/access.log upstream;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    gzip on;
    gzip_min_length 1;
    gzip_types text/event-stream application/json;
    proxy_ignore_headers X-Accel-Buffering;
    include ${dir}/switchboard.conf;
}
`;
}

// Starts nginx with deploy/nginx-cluster.conf in front of the gateways on `upstreamPorts` and
// resolves with { url, port, dir, errorLog(), accessLog(), stop() } once it accepts connections.
// stop() kills it and removes its prefix unless `keep` is true (to read the logs after a failure).
async function startNginxCluster(upstreamPorts) {
  if (!fs.existsSync(NGINX)) throw new Error(`nginx not found at ${NGINX}: apt-get install -y nginx, or set NGINX`);
  const site = fs.readFileSync(CLUSTER_SITE_FILE, 'utf8');
  let lastError;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-nginx-'));
    fs.writeFileSync(path.join(dir, 'switchboard.conf'), rewriteClusterSite(site, port, upstreamPorts));
    fs.writeFileSync(path.join(dir, 'nginx.conf'), mainConfig(dir));
    const read = (file) => { try { return fs.readFileSync(path.join(dir, file), 'utf8'); } catch (e) { return ''; } };
    const child = spawn(NGINX, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    running.add(child);
    let stderr = '';
    child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-20000); });
    child.once('exit', () => running.delete(child));
    try {
      await waitListening(port, child, { details: () => stderr + read('error.log') });
    } catch (e) {
      child.kill('SIGKILL');
      lastError = e;
      if (/already in use/i.test(e.message)) { fs.rmSync(dir, { recursive: true, force: true }); continue; }
      throw e;
    }
    return {
      url: `http://127.0.0.1:${port}`,
      port,
      dir,
      errorLog: () => read('error.log'),
      accessLog: () => read('access.log'),
      stop: ({ keep = false } = {}) => new Promise((resolve) => {
        const done = () => { if (!keep) fs.rmSync(dir, { recursive: true, force: true }); resolve(); };
        if (child.exitCode !== null || child.signalCode !== null) { done(); return; }
        child.once('exit', done);
        child.kill('SIGKILL'); // one process (master_process off): this ends all of nginx
      }),
    };
  }
  throw lastError;
}

module.exports = { startNginxCluster, rewriteClusterSite, CLUSTER_SITE_FILE };
