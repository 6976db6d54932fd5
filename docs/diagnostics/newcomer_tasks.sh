#!/usr/bin/env bash
# The newcomer's four tasks (issue "a newcomer's second hour"), each from the README and --help alone, timed:
# train an SAE on a folder of 50 own PNGs, evaluate it, steer one feature from Python, disentangle and decompose.
# Bar: each task under 2 minutes on 2 CPU cores; the SAE usable (the verdict line: EV >= 0.8, < 10% dead).
#   bash docs/diagnostics/newcomer_tasks.sh [OUT]     (default out/newcomer; offline, toy CLIP)
set -euo pipefail
OUT=${1:-out/newcomer}
export HF_HUB_OFFLINE=1
rm -rf "$OUT" && mkdir -p "$OUT/pngs"
python - "$OUT/pngs" <<'PY'
import sys
from sae_clip_plugin.training.sources import image_source
source = image_source("toy", max_images=50, seed=5).with_transform(lambda image: image)  # 50 PNGs "of my own"
for i in range(len(source)):
    source[i].save(f"{sys.argv[1]}/{i:03d}.png")
PY
timed() {  # name, command...: the wall time and the lines a user reads first
  local name=$1; shift; local t0; t0=$(date +%s%N); "$@" > "$OUT/$name.log" 2>&1; local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '%-12s %4d.%d s  %s\n' "$name" $((ms / 1000)) $((ms % 1000 / 100)) \
    "$(grep -E 'verdict|predictions changed|EV [0-9]|the bar|top heads' "$OUT/$name.log" | head -2 | tr '\n' ' ')"
}
timed train sae-clip train --preset topk --model toy --images "$OUT/pngs" --hook blocks.3.hook_resid_post --out "$OUT/sae"
timed eval sae-clip eval --sae "$OUT/sae" --images "$OUT/pngs" --out "$OUT/eval"
timed steer python - "$OUT/sae" <<'PY'
import sys, torch, sae_lens
from sae_clip_plugin import HookedSAEViT, steer
from sae_clip_plugin.toy import toy_classnames, toy_templates, typographic_set
model = HookedSAEViT.from_pretrained("toy")
sae = sae_lens.SAE.load_from_disk(sys.argv[1])
x = torch.stack([model.preprocess(img) for img, _ in typographic_set(4).items()])
weights = model.zero_shot_weights(toy_classnames(), toy_templates())
_, cache = model.run_with_cache_with_saes(x, saes=[sae], use_error_term=True)
feature = int(cache[f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"].sum((0, 1)).argmax())
with steer(model, sae, {feature: "relative:5.41"}, images=x):
    steered = model(x)
before, after = model.zero_shot_logits(model(x), weights).argmax(-1), model.zero_shot_logits(steered, weights).argmax(-1)
print(f"feature {feature} steered: predictions changed on {int((before != after).sum())} of {len(x)} images")
PY
timed disentangle sae-clip disentangle --sae "$OUT/sae" --task toy-typographic --out "$OUT/disentangle"
timed decompose sae-clip decompose --model toy --task toy-typographic --out "$OUT/decompose"
