"""Precision tooling above the pipeline: write a reduced-precision model directory behind an
accuracy gate (``quantize``) and time every engine x precision to record the fastest (``tune``).

It sits above ``fastseg.segmenter`` because a gate compares the labels the whole pipeline
produces (pre-processing, engine, head, restore to source size); the tuning *record* that
``Segmenter(engine="auto")`` reads lives below, in ``fastseg.engines.tuning``.
"""
