// Runs exported ONNX models in ONNX Runtime (the npm package onnxruntime-node)
// for tests/models/test_onnx_export.cpp and tests/tools/test_export.cpp.
//
// usage: node onnx_run.js NODE_MODULES (MODEL.onnx INPUT.f32 N,C,H,W OUTPUT.f32)...
// NODE_MODULES is the folder holding onnxruntime-node; each INPUT.f32 is the
// raw little-endian float32 input of the given shape; the model's first output
// is written raw to OUTPUT.f32. CPU, one thread, ORT's default (full) graph
// optimisations, as a deployment would run it. Exit status 1 with the error on
// stderr when anything fails.
'use strict';
const fs = require('fs');
const path = require('path');

(async () => {
  const [modules, ...jobs] = process.argv.slice(2);
  if (!modules || jobs.length === 0 || jobs.length % 4 !== 0)
    throw new Error('usage: node onnx_run.js NODE_MODULES (MODEL INPUT SHAPE OUTPUT)...');
  const ort = require(path.join(path.resolve(modules), 'onnxruntime-node'));
  for (let i = 0; i < jobs.length; i += 4) {
    const [model, input, shape, output] = jobs.slice(i, i + 4);
    const session = await ort.InferenceSession.create(model,
      { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential' });
    const bytes = fs.readFileSync(input);
    const data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    const dims = shape.split(',').map(Number);
    const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, dims) };
    const result = await session.run(feeds);
    const y = result[session.outputNames[0]].data;
    fs.writeFileSync(output, Buffer.from(y.buffer, y.byteOffset, y.byteLength));
  }
})().catch((e) => {
  process.stderr.write(`onnx_run.js: ${e.message || e}\n`);
  process.exit(1);
});
