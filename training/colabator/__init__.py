"""Colabator: fine-tuning a trained dehazer on real hazy photos with pseudo-labels (``dehaze finetune``).

Paper: Fang et al., "Real-world Image Dehazing with Coherence-based Pseudo Labeling and Cooperative Unfolding
Network", NeurIPS 2024 (code ``cnyvfang/CORUN-Colabator``; the facts we use are summarised in docs/training.md,
"Fine-tuning on real photos").
Colabator is plug-and-play: it fine-tunes any of our networks, DCMPNet or CORUN. Our own code, one concept per file:

``config.py``          the validated YAML schema (``training/configs/colabator_*.yaml``)
``real_photos.py``     the real photos at their working size and the seeded visiting order
``ema.py``             the mean teacher: teacher ← decay·teacher + (1 − decay)·student after every step
``pool.py``            the optimal label pool: per photo the best label, replaced only if better on every criterion
``trust.py``           the per-pixel trust of a label from block-wise scores (the paper's local coherence)
``strong_augment.py``  the student's strongly augmented view (photometric jitter, blur, noise, JPEG)
``networks.py``        one adapter per model family: forward, label, loss terms, checkpoint
``finetune.py``        the loop, checkpoints and exact resume (the ``dehaze finetune`` command: ``commands.finetune``)

What differs from the released code, and why:

* **Scorers.** DA-CLIP (haze probability) and MUSIQ cannot be had offline; FADE and NIQE
  (:mod:`training.quality`) stand in for them behind the same small ``Scorer`` interface, globally for the pool and
  FADE per block for the trust map. The paper's scorers plug in as further ``Scorer`` objects.
* **Pool rule** strict (``>`` on every criterion, theirs ``>=``), so identical labels do not churn the pool.
* **Teacher input.** The teacher labels the whole photo at a fixed working size (theirs: a 288² bicubic resize
  ignoring the aspect ratio, plus a JPEG "weak" augmentation); the same input at every visit makes the pool's
  comparisons like with like. The student gets a random crop of it, strongly augmented; the crop and flip are
  applied identically to the label, its trust map and its pseudo-depth.
* **More candidates.** Besides the EMA teacher, LKD-Net's released weights (``training/teachers``) propose labels
  once per photo; the pool rule decides between all of them.
* **Trust direction.** Hazier blocks get less weight (the released local DA-CLIP term gives them more, CORUN.md §3).
* **Losses** are the released plain and trust-weighted L1 (and, for CORUN, the ASM re-synthesis term); the VGG
  perceptual terms are left out (no ImageNet weights offline). DCMPNet's Ψ keeps learning (see ``networks.py``).
"""
