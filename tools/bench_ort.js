// ONNX Runtime's side of the inference comparison (tools/README.md,
// "Against ONNX Runtime"): images/s at a batch and batch-1 latency of ONNX
// models, e.g. the ones spruce-export writes, on ORT's CPU provider (the npm
// package onnxruntime-node, installed with --ignore-scripts).
//
// usage: node tools/bench_ort.js NODE_MODULES [--threads T] [--batch N]
//            [--runs R] [--iters I] MODEL.onnx C,H,W [MODEL.onnx C,H,W ...]
//
// Per model: `runs` timings of `iters` calls at batch N (images/s, median and
// range) and the median of 10*iters single calls at batch 1, after a warm-up.
// T intra-op threads, one inter-op thread, sequential execution and ORT's full
// graph optimisations, as a deployment would run it. One line per model:
//   RESULT ort model=FILE input=CxHxW batch=N infer_img_s=MED [MIN..MAX] b1_ms=MED
'use strict';
const path = require('path');

function parse(argv) {
  const o = { threads: 2, batch: 128, runs: 5, iters: 5, jobs: [] };
  const [modules, ...rest] = argv;
  if (!modules) throw new Error('usage: node bench_ort.js NODE_MODULES [flags] (MODEL C,H,W)...');
  o.modules = modules;
  for (let i = 0; i < rest.length; ++i) {
    const flag = rest[i].match(/^--(threads|batch|runs|iters)$/);
    if (flag) {
      const v = Number(rest[++i]);
      if (!Number.isInteger(v) || v <= 0) throw new Error(`--${flag[1]}: expected a positive integer, got '${rest[i]}'`);
      o[flag[1]] = v;
      continue;
    }
    const shape = (rest[i + 1] || '').split(',').map(Number);
    if (shape.length !== 3 || !shape.every((d) => Number.isInteger(d) && d > 0))
      throw new Error(`${rest[i]}: expected its input shape C,H,W after it, got '${rest[i + 1] || ''}'`);
    o.jobs.push({ model: rest[i], shape });
    ++i;
  }
  if (o.jobs.length === 0) throw new Error('no MODEL.onnx C,H,W given');
  return o;
}

const seconds = () => Number(process.hrtime.bigint()) / 1e9;
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

(async () => {
  const o = parse(process.argv.slice(2));
  const ort = require(path.join(path.resolve(o.modules), 'onnxruntime-node'));
  for (const { model, shape } of o.jobs) {
    const session = await ort.InferenceSession.create(model, {
      intraOpNumThreads: o.threads, interOpNumThreads: 1,
      graphOptimizationLevel: 'all', executionMode: 'sequential',
    });
    const input = (n) => ({
      [session.inputNames[0]]: new ort.Tensor('float32',
        Float32Array.from({ length: n * shape[0] * shape[1] * shape[2] }, () => Math.random() - 0.5),
        [n, ...shape]),
    });
    const big = input(o.batch), one = input(1);
    for (let i = 0; i < 3; ++i) await session.run(big);
    const rates = [];
    for (let r = 0; r < o.runs; ++r) {
      const t0 = seconds();
      for (let i = 0; i < o.iters; ++i) await session.run(big);
      rates.push((o.iters * o.batch) / (seconds() - t0));
    }
    for (let i = 0; i < 10; ++i) await session.run(one);
    const single = [];
    for (let i = 0; i < 10 * o.iters; ++i) {
      const t0 = seconds();
      await session.run(one);
      single.push(seconds() - t0);
    }
    const lo = Math.min(...rates), hi = Math.max(...rates);
    console.log(`RESULT ort model=${path.basename(model)} input=${shape.join('x')} batch=${o.batch} ` +
      `infer_img_s=${median(rates).toFixed(1)} [${lo.toFixed(1)}..${hi.toFixed(1)}] ` +
      `b1_ms=${(1e3 * median(single)).toFixed(3)}`);
  }
})().catch((e) => {
  process.stderr.write(`bench_ort.js: ${e.message || e}\n`);
  process.exit(1);
});
