# Medians over the rounds of run14.sh: python3 summarize14.py LOGDIR (ratios to ONNX Runtime, sparse/dense, batch 1, GFLOP/s).
import json,re,statistics as st,sys
L = sys.argv[1]
def ort(i):
    d={}
    for line in open(f'{L}/ort-{i}.txt'):
        m=re.search(r'model=(\S+) input=\S+ batch=\d+ infer_img_s=([\d.]+).*b1_ms=([\d.]+)',line)
        if m: d[m.group(1)]=(float(m.group(2)),float(m.group(3)))
    return d
def models(i):
    d={}
    for line in open(f'{L}/models-{i}.txt'):
        f=line.split()
        if len(f)>8 and f[0] in ('resnet20','mobilenet_v1') and 'x' in f[1]:
            d[(f[0],f[1])]=float(f[6])
    return d
rows={}
for i in (1,2,3):
    o=ort(i); m=models(i); j=json.load(open(f'{L}/sparse-{i}.json'))['sparse']
    R=o['spruce-resnet20b-1x28.onnx'][0]; M=o['spruce-mobilenet-1x28.onnx'][0]
    def add(k,v): rows.setdefault(k,[]).append(v)
    add('R20A dense 1x28 / ORT', m[('resnet20','1x28x28')]/o['resnet20-1x28.onnx'][0])
    add('R20A dense 3x32 / ORT', m[('resnet20','3x32x32')]/o['resnet20-3x32.onnx'][0])
    add('MobV1 dense 1x28 / ORT(ref)', m[('mobilenet_v1','1x28x28')]/o['mobilenetv1-1x28.onnx'][0])
    add('MobV1 dense 3x32 / ORT(ref)', m[('mobilenet_v1','3x32x32')]/o['mobilenetv1-3x32.onnx'][0])
    add('ORT b1 r20b ms', o['spruce-resnet20b-1x28.onnx'][1]); add('ORT b1 mob ms', o['spruce-mobilenet-1x28.onnx'][1])
    for r in j['models']:
        name=f"{r['model']} {r['target']} {r['sparsity']:.2f}"
        base = R if r['model'].startswith('R') else M
        add(name+' sparse/ORT', r['sparse_img_s']/base)
        add(name+' dense/ORT', r['dense_img_s']/base)
        add(name+' sparse/dense', r['speedup'])
        add(name+' b1 x', r['speedup_b1'])
        add(name+' b1 sparse ms', r['sparse_b1_ms']); add(name+' b1 dense ms', r['dense_b1_ms'])
        if 'speedup_b1_auto' in r:  # logs from bf9524d on: batch 1 on the threads each side picks
            add(name+' b1 auto x', r['speedup_b1_auto'])
            add(name+' b1 auto sparse ms', r['sparse_b1_auto_ms']); add(name+' b1 auto dense ms', r['dense_b1_auto_ms'])
            add(name+' b1 auto threads sparse', r['sparse_b1_auto_threads']); add(name+' b1 auto threads dense', r['dense_b1_auto_threads'])
        if 'speedup_auto' in r:  # logs from c57f47f on: the batch by InferenceThreads' plan too
            add(name+' b auto sparse/ORT', r['sparse_auto_img_s']/base)
            add(name+' b auto dense/ORT', r['dense_auto_img_s']/base)
            add(name+' b auto sparse/dense', r['speedup_auto'])
            add(name+' b auto chunk sparse', r['sparse_auto_chunk']); add(name+' b auto chunk dense', r['dense_auto_chunk'])
        add(name+' remain MMACs', r['remaining_macs']/1e6)
        add(name+' GFLOP/s', 2*r['remaining_macs']*r['sparse_img_s']/1e9)
        add(name+' compact %', 100*r['compact_bytes']/r['dense_model_ckpt_bytes'])
for k,v in rows.items():
    print(f"{k:45s} " + ", ".join(f"{x:.2f}" for x in v) + f"  | median {st.median(v):.2f}")
