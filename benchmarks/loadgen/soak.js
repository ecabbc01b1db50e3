'use strict';
// The soak scenario's measuring side (benchmarks/soak.py runs it through
// main.js): a control job with a few readers gets events at a fixed rate while
// 1,000 readers on other jobs get a trickle; first alone (baseline), then while
// attack.js (a child process) runs the attack mix. Samples monit's RSS and open
// descriptors all along, and reads its /metrics at the end of each phase.

const fs = require('fs');
const http = require('http');
const path = require('path');
const { fork } = require('child_process');
const { performance } = require('perf_hooks');
const { Histogram, openReaders, closeReaders, paced, prng, procRss, sleep, log } = require('./lib');

const CONTROL = 'soak-control';
const encoder = new TextEncoder();
const round = (x, digits = 3) => (x === null || x === undefined ? null : Number(x.toFixed(digits)));

// --------------------------------------------------------------- monit's side

function openFds(pid) {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch (err) {
    return null;
  }
}

// /metrics as {"name{labels}": value}.
function fetchMetrics(env) {
  return new Promise((resolve) => {
    const req = http.get(
      { host: env.host, port: env.port, path: '/metrics', headers: { 'X-Auth-Token': env.token }, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => {
          if (res.statusCode !== 200) return resolve({ error: `HTTP ${res.statusCode}` });
          const metrics = {};
          for (const line of body.split('\n')) {
            const m = /^([^#\s][^\s]*)\s+(\S+)$/.exec(line);
            if (m) metrics[m[1]] = Number(m[2]);
          }
          resolve(metrics);
        });
      },
    );
    req.setTimeout(10000, () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', (err) => resolve({ error: err.message }));
  });
}

// Every few seconds: monit's RSS and descriptors, and the attacker's own view.
class Sampler {
  constructor(env, everyS) {
    this.pid = env.serverPid;
    this.samples = [];
    this.phase = 'setup';
    this.attack = {};
    this.t0 = performance.now();
    this.timer = setInterval(() => this.sample(), everyS * 1000);
  }

  sample() {
    let rss = null;
    try {
      rss = procRss(this.pid) / 2 ** 20;
    } catch (err) {
      // the server is gone: the run will say so
    }
    this.samples.push({
      t_s: round((performance.now() - this.t0) / 1000, 1),
      phase: this.phase,
      rss_mb: round(rss, 2),
      fds: openFds(this.pid),
      ...this.attack,
    });
  }

  enter(phase) {
    this.sample();
    this.phase = phase;
  }

  stop() {
    clearInterval(this.timer);
    this.sample();
    return this.samples;
  }
}

// ------------------------------------------------------------------ attacker

function startAttacker(bench, p, jobs) {
  const env = bench.env;
  const cfg = {
    ...p,
    nats: env.nats,
    host: env.host,
    port: env.port,
    token: env.churnToken,
    control_job: CONTROL,
    jobs,
    tag: Date.now().toString(36),
    status_s: p.rss_every_s,
  };
  const child = fork(path.join(__dirname, 'attack.js'), [JSON.stringify(cfg)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waitFor = (type, timeoutMs) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`attacker: no ${type} within ${timeoutMs / 1000} s`)), timeoutMs);
      const onMessage = (msg) => {
        if (msg.type !== type) return;
        clearTimeout(timer);
        child.off('message', onMessage);
        resolve(msg);
      };
      child.on('message', onMessage);
      child.once('exit', (code) => reject(new Error(`attacker exited with ${code} before its ${type}`)));
    });
  return { child, waitFor };
}

async function stopAttacker(attacker) {
  const stats = attacker.waitFor('stats', 30000);
  attacker.child.send({ cmd: 'stop' });
  try {
    return (await stats).stats;
  } catch (err) {
    attacker.child.kill();
    return { error: err.message };
  }
}

// ------------------------------------------------------------------- phases

// One measured stretch: the control job at p.rate, the background trickle at
// p.bg_rate, for `seconds`, then up to drain_s for the last deliveries.
async function measure(bench, p, name, seconds, readers, windows) {
  const control = bench.phase(`control ${name}`, { kind: 'control', readers: p.control_readers, rate: p.rate }).start();
  const bg = bench.phase(`background ${name}`, { kind: 'background', readers: p.readers, rate: p.bg_rate }).start();
  windows[control.index] = [];
  const foreign0 = readers.foreign.count;
  const random = prng(control.index);
  await Promise.all([
    paced(p.rate, Math.round(p.rate * seconds), (i, due) => bench.publish(control, CONTROL, p.control_readers, due)),
    paced(p.bg_rate, Math.round(p.bg_rate * seconds), (i, due) =>
      bench.publish(bg, readers.bgJobs[Math.floor(random() * readers.bgJobs.length)], readers.perJob, due),
    ),
  ]);
  await Promise.all([control.drain(p.drain_s * 1000), bg.drain(p.drain_s * 1000)]);
  const c = control.stop();
  const b = bg.stop();
  c.foreign_frames = readers.foreign.count - foreign0;
  c.readers_ended = readers.control.filter((r) => r.ended).length;
  b.readers_ended = readers.bg.filter((r) => r.ended).length;
  c.windows = windows[control.index].map((h, i) => ({
    from_s: i * p.window_s,
    events: Math.round(h.n / p.control_readers),
    p50_ms: round(h.percentile(50)),
    p99_ms: round(h.percentile(99)),
    max_ms: round(h.max),
  }));
  log(`soak ${name}: control p50 ${c.p50_ms} p99 ${c.p99_ms} ms, ${c.received}/${c.expected}, loadgen ${c.loadgen_cpu}`);
  return [c, b];
}

// Jobs opened by service.create (as the engine would), then their readers:
// the control job's, and p.readers spread over p.bg_jobs other jobs.
async function openJobs(bench, p, windows) {
  const bgJobs = Array.from({ length: p.bg_jobs }, (_, i) => `soak-bg-${i}`);
  for (const job of [CONTROL, ...bgJobs]) bench.nc.publish('service.create', encoder.encode(`{"id":"${job}"}`));
  await bench.nc.flush();
  const perJob = Math.ceil(p.readers / p.bg_jobs);
  const foreign = { count: 0, samples: [] };
  const onForeign = (frame) => {
    foreign.count++;
    if (foreign.samples.length < 5 && !frame.includes('event: service.create')) foreign.samples.push(frame.slice(0, 200));
  };
  // The control readers also fill the per-minute histograms of the phase they read.
  const perWindow = p.rate * p.window_s;
  const onControl = (phase, seq, sentMs, now) => {
    bench.onEvent(phase, seq, sentMs, now);
    const hists = windows[phase];
    if (hists) {
      const w = Math.floor(seq / perWindow);
      (hists[w] ||= new Histogram()).record(now - sentMs);
    }
  };
  log(`soak: opening ${p.control_readers} control readers and ${bgJobs.length * perJob} others`);
  const control = await openReaders(bench.env, p.control_readers, () => CONTROL, onControl, 64, onForeign);
  const bg = await openReaders(bench.env, bgJobs.length * perJob, (i) => bgJobs[i % bgJobs.length], bench.onEvent);
  return { control, bg, bgJobs, perJob, foreign };
}

// ------------------------------------------------------------------ scenario

async function soak(bench, p) {
  const windows = {};
  const readers = await openJobs(bench, p, windows);
  p = { ...p, readers: readers.bg.length };
  const warm = bench.phase('warm');
  for (let i = 0; i < 3; i++) bench.publish(warm, CONTROL, p.control_readers);
  await warm.drain(10000);
  const metrics = { start: await fetchMetrics(bench.env) };
  const sampler = new Sampler(bench.env, p.rss_every_s);

  sampler.enter('baseline');
  const baseline = await measure(bench, p, 'baseline', p.baseline_s, readers, windows);
  metrics.baseline = await fetchMetrics(bench.env);

  log(`soak: starting the attack for ${p.attack_s} s`);
  const attacker = startAttacker(bench, p, readers.bgJobs);
  attacker.child.on('message', (msg) => {
    if (msg.type === 'status') sampler.attack = { slowloris_open: msg.slowloris_open, churn_inflight: msg.churn_inflight };
  });
  const ready = await attacker.waitFor('ready', 120000);
  bench.env.helperPids = [attacker.child.pid];
  sampler.enter('attack');
  await sleep(p.lead_s * 1000); // every attack at full strength before the first event
  const attack = await measure(bench, p, 'attack', p.attack_s, readers, windows);
  metrics.attack = await fetchMetrics(bench.env);
  const stats = await stopAttacker(attacker);
  stats.ramp_s = ready.ramp_s;
  sampler.attack = {};

  sampler.enter('cooldown'); // does what the attack took come back?
  await sleep(p.cooldown_s * 1000);
  metrics.end = await fetchMetrics(bench.env);
  const samples = sampler.stop();
  closeReaders(readers.control);
  closeReaders(readers.bg);

  const [cb, bb] = baseline;
  const [ca, ba] = attack;
  const ratio = (a, b) => (a === null || b === null || !b ? null : round(a / b));
  const delivered = (phase) => (phase.expected ? round(phase.received / phase.expected, 6) : null);
  return {
    summary: {
      control_delivered_baseline: delivered(cb),
      control_delivered_attack: delivered(ca),
      control_p50_baseline_ms: cb.p50_ms,
      control_p99_baseline_ms: cb.p99_ms,
      control_p50_attack_ms: ca.p50_ms,
      control_p99_attack_ms: ca.p99_ms,
      control_p99_ratio: ratio(ca.p99_ms, cb.p99_ms),
      control_foreign_frames: cb.foreign_frames + ca.foreign_frames,
      control_readers_ended: ca.readers_ended,
      background_delivered_baseline: delivered(bb),
      background_delivered_attack: delivered(ba),
      background_p99_baseline_ms: bb.p99_ms,
      background_p99_attack_ms: ba.p99_ms,
      background_readers_ended: ba.readers_ended,
    },
    phases: [cb, bb, ca, ba],
    foreign_samples: readers.foreign.samples,
    attack: stats,
    metrics,
    samples,
  };
}

module.exports = { soak };
