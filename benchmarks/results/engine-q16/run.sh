#!/bin/bash
# Issue 16 figures on a quiet machine: before (aa639da: /tmp/before) and after (HEAD, the venv), alternated.
cd /work/main
V=/work/main/.venv/bin
export PATH=$V:$PATH
out=/tmp/q16; mkdir -p $out
echo "HEAD $(git rev-parse --short HEAD); load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in 1 2; do
  for which in before after; do
    if [ $which = before ]; then PP=/tmp/before; D=/tmp/before; else PP=/work/main; D=/work/main; fi
    echo "== $which run $i: compress"
    (cd $D && PYTHONPATH=$PP python -m dlion.bench compress --sizes 2.5e7 --no-tf --json) > $out/compress-$which-$i.json 2>/dev/null
    echo "== $which run $i: exchange np2"
    (cd $D && PYTHONPATH=$PP mpiexec -n 2 python -m dlion.bench exchange --sizes 1e3 1e4 1e6 1.6e7 --peer-sizes 1e6 1e7 --modes dense topk8 --budget-s 3 --json) > $out/ex2-$which-$i.json 2>/dev/null
    echo "== $which run $i: exchange np4"
    (cd $D && PYTHONPATH=$PP mpiexec -n 4 python -m dlion.bench exchange --sizes 1e3 1e4 1e6 1.6e7 --peer-sizes 1e6 1e7 --modes dense topk8 --budget-s 3 --json) > $out/ex4-$which-$i.json 2>/dev/null
    echo "== $which run $i: train"
    (cd $D && PYTHONPATH=$PP mpiexec -n 4 python examples/train.py --epochs 1 2>&1 | grep -E "final|CPU|epoch") > $out/train-$which-$i.txt
  done
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
