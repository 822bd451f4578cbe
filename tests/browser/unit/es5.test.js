'use strict';
// static/switchboard.js must run unmodified in old browsers: it has to parse as ES5.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const acorn = require('acorn');

const file = path.join(__dirname, '..', '..', '..', 'static', 'switchboard.js');
const source = fs.readFileSync(file, 'utf8');

test('switchboard.js parses as ES5 (acorn, ecmaVersion 5)', () => {
  assert.doesNotThrow(() => acorn.parse(source, { ecmaVersion: 5, sourceType: 'script' }));
});

test('the demo page\'s inline script is ES5 too', () => {
  const html = fs.readFileSync(path.join(__dirname, '..', '..', '..', 'static', 'index.html'), 'utf8');
  const scripts = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]);
  assert.ok(scripts.length >= 1);
  for (const code of scripts) assert.doesNotThrow(() => acorn.parse(code, { ecmaVersion: 5, sourceType: 'script' }));
  assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, 'no external assets');
});

test('switchboard.js is UMD: a browser global, CommonJS and AMD', () => {
  const win = { setTimeout, clearTimeout };
  win.window = win;
  vm.runInNewContext(source, win);
  assert.equal(typeof win.Switchboard.connect, 'function');

  const mod = { exports: {} };
  vm.runInNewContext(source, { module: mod, exports: mod.exports, global: {} });
  assert.equal(typeof mod.exports.connect, 'function');

  let defined = null;
  const define = (deps, factory) => { defined = factory(); };
  define.amd = {};
  const amdWin = { define };
  amdWin.window = amdWin;
  vm.runInNewContext(source, amdWin);
  assert.equal(typeof defined.connect, 'function');
});
