#!/usr/bin/env bash
# Run the whole study: every notebook in notebooks/ in order, headless, with papermill.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  cat <<USAGE
Usage: ./run_all.sh [options]

Executes notebooks/01_*.ipynb ... 05_*.ipynb in order with papermill (sets up .venv on first
use). Writes executed notebooks, logs, figures, checkpoints and results.jsonl to the output
folder; stops at the first failing notebook and names it and its failing cell.

Options:
  --dataset NAME   demo (default, synthetic, generated on first use), agiqa3k, aigciqa2023,
                   aigiqa20k, koniq10k, spaq
  --root PATH      dataset folder (not needed for demo)
  --profile P      lite (default: real packaged weights, CPU), full (papers' hub weights,
                   GPU recommended), tiny (random weights, smoke tests only)
  --out DIR        output folder (default: outputs/<dataset>_<profile>, or
                   outputs/<dataset>_full_random with --weights random)
  --weights W      pretrained (default) or random: with --profile full, every full-size
                   architecture (ViT-B/16 CLIP, ViT-B/8 MANIQA; for the MLLM the tiny random
                   mPLUG-Owl2 through the full loader) with random weights, no download: a
                   pipeline check, labelled random in every record and checkpoint
  --fast           smoke-test settings in every notebook (96 images per study, 2 epochs; about
                   1 min on a 2-core CPU)
  --only NN        run only notebooks whose number is NN (repeatable, e.g. --only 02)
  --device DEV     cpu (default) or cuda
  --param [NN:]NAME=VALUE
                   extra papermill parameter for every notebook, or only notebook NN
                   (repeatable; VALUE is YAML), e.g. --param 02:epochs=20
                   --param "04:variants=[maniqa, released_gate]"
  --publish        after the run, copy the executed notebooks (figures downscaled, volatile
                   metadata and machine paths removed) to
                   notebooks/reference/<dataset>_<profile>/ and the figures to figures/
  --publish-to DIR like --publish, under DIR instead of the repository
  --launcher L     single (default): everything runs in one process. accelerate: before the
                   notebooks, \`accelerate launch -m agiqa_lib.cli\` runs the heavy steps on
                   --num-processes processes with each notebook's own settings (its parameter
                   defaults, the options above, its --param items): train-clip (02's CLIP
                   features and training), semantic extract (03's MLLM vectors; not with
                   --fast or --weights random) and train-ma (04's tokens, vectors and
                   training); the notebooks then read the warm caches and the finished
                   training states and only evaluate, tabulate and plot. Logs: logs/launch_*.log
  --num-processes N  processes for --launcher accelerate (default: the GPU count with
                   --device cuda, else 2 CPU processes with gloo)
  --also-protocol P  before notebook 05, train 02's and 04's models once more on split P
                   (e.g. prompt_disjoint) with the same settings (\`agiqa train-clip\` and
                   \`agiqa train-ma\` with each notebook's parameters and protocol=P, on the
                   launcher above), into the same results.jsonl, so that notebook 05 sets P
                   beside the random split (repeatable; only for the selected notebooks).
                   Logs: logs/launch_*_P.log
  -h, --help       show this help

Progress bars print one summary line per loop in the executed notebooks
(AGIQA_PROGRESS=summary; set AGIQA_PROGRESS yourself to override).
USAGE
}

dataset=demo; root=""; profile=lite; out=""; fast=False; device=cpu; only=(); extra=()
publish=""
weights=pretrained
launcher=single; nproc=""; also=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dataset) dataset="$2"; shift 2 ;;
    --root) root="$2"; shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --fast) fast=True; shift ;;
    --only) only+=("$2"); shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --param) extra+=("$2"); shift 2 ;;
    --weights) weights="$2"; shift 2 ;;
    --publish) publish="$here"; shift ;;
    --publish-to) mkdir -p "$2"; publish="$(cd "$2" && pwd)"; shift 2 ;;
    --launcher) launcher="$2"; shift 2 ;;
    --num-processes) nproc="$2"; shift 2 ;;
    --also-protocol) also+=("$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$root" ]] && root="$(cd "$root" && pwd)"
case "$weights" in
  pretrained) ;;
  random) [[ "$profile" == full ]] || { echo "run_all.sh: --weights random builds the full-size architectures with random weights: it needs --profile full (tiny is already random)" >&2; exit 2; }
          [[ -z "$publish" ]] || { echo "run_all.sh: --weights random is a pipeline check: its notebooks and figures are not published (drop --publish)" >&2; exit 2; } ;;
  *) echo "run_all.sh: --weights must be pretrained or random, not $weights" >&2; exit 2 ;;
esac
case "$launcher" in
  single|accelerate) ;;
  *) echo "run_all.sh: --launcher must be single or accelerate, not $launcher" >&2; exit 2 ;;
esac
[[ -z "$nproc" || "$nproc" =~ ^[1-9][0-9]*$ ]] || { echo "run_all.sh: --num-processes must be a positive integer" >&2; exit 2; }
tag=""; [[ "$weights" == random ]] && tag=_random
out="${out:-$here/outputs/${dataset}_${profile}${tag}}"
mkdir -p "$out/notebooks" "$out/logs" "$out/figures"
out="$(cd "$out" && pwd)"

py="$("$here/scripts/setup_env.sh" | tail -n 1)"
export PYTHONUNBUFFERED=1
# inline figures in the executed notebooks; one progress line per loop; no hub progress bars
export MPLBACKEND="module://matplotlib_inline.backend_inline"
export AGIQA_PROGRESS="${AGIQA_PROGRESS:-summary}" HF_HUB_DISABLE_PROGRESS_BARS=1
params=(-p dataset "$dataset" -p profile "$profile" -p out_dir "$out"
        -p results_path "$out/results.jsonl" -p fast "$fast" -p device "$device")
[[ -n "$root" ]] && params+=(-p root "$root")
[[ "$weights" == random ]] && params+=(-p weights random)

start=$(date +%s)

selected() { [[ ${#only[@]} -eq 0 || " ${only[*]} " == *" $1 "* ]]; }
params_of() {  # the --param items notebook $1 gets, without the NN: prefix
  local item
  for item in "${extra[@]+"${extra[@]}"}"; do
    if [[ "$item" =~ ^([0-9][0-9]):(.*)$ ]]; then
      [[ "${BASH_REMATCH[1]}" == "$1" ]] || continue
      item="${BASH_REMATCH[2]}"
    fi
    printf '%s\0' "$item"
  done
}
cli_params() {  # notebook $1's settings as agiqa --param items: defaults, run_all's values, --param
  local nb item fixed=(dataset="$dataset" profile="$profile" out_dir="$out"
                       results_path="$out/results.jsonl" device="$device")
  [[ -n "$root" ]] && fixed+=(root="$root")
  [[ "$weights" == random ]] && fixed+=(weights=random)
  nb="$(ls "$here"/notebooks/"$1"_*.ipynb)"
  "$py" - "$nb" "${fixed[@]}" <<'PY'
import sys
import papermill
nb, *fixed = sys.argv[1:]
items = [f"{k}={v['default']}" for k, v in papermill.inspect_notebook(nb).items()]
items += [f"{k}={v!r}" for k, _, v in (item.partition("=") for item in fixed)]
sys.stdout.write("".join(f"{item}\0" for item in items))
PY
  printf 'fast=%s\0' "$fast"
  params_of "$1"
}
launched() {  # name, agiqa arguments...: one heavy step on $nproc processes, logged
  local name="$1"; shift
  echo "[run_all] launch $name on ${nproc:-1} process(es) ..."
  local t0; t0=$(date +%s)
  if ! "${launch[@]}" -m agiqa_lib.cli "$@" >"$out/logs/launch_$name.log" 2>&1; then
    echo "[run_all] FAILED: launched $name; log: $out/logs/launch_$name.log" >&2
    tail -n 25 "$out/logs/launch_$name.log" >&2
    exit 1
  fi
  echo "[run_all] launch $name done in $(( $(date +%s) - t0 )) s"
}
trained() {  # NN command name [agiqa arguments...]: notebook NN's training (train-clip or
  # train-ma) with that notebook's own settings (cli_params), launched as name
  local nb="$1" cmd="$2" name="$3" item args=(); shift 3
  while IFS= read -r -d '' item; do args+=(--param "$item"); done < <(cli_params "$nb")
  launched "$name" "$cmd" "$dataset" "${args[@]}" "$@"
}
launch=("$py")  # --launcher single: one process
if [[ "$launcher" == accelerate ]]; then
  if [[ -z "$nproc" ]]; then
    nproc=2
    [[ "$device" == cuda* ]] && nproc="$("$py" -c 'import torch; print(max(1, torch.cuda.device_count()))')"
  fi
  launch=("$py" -m accelerate.commands.launch --num_processes "$nproc" --num_machines 1
          --mixed_precision no --dynamo_backend no)
  # --multi_gpu picks accelerate's torchrun-based launcher; with --device cpu the processes use gloo
  (( nproc > 1 )) && launch+=(--multi_gpu)
  if selected 02; then trained 02 train-clip train-clip; fi
  if selected 03 && [[ "$fast" == False && "$weights" == pretrained ]]; then
    args=(--profile "$profile" --device "$device"); [[ -n "$root" ]] && args+=(--root "$root")
    while IFS= read -r -d '' item; do
      [[ "$item" =~ ^model_id=(.+)$ && ! "${BASH_REMATCH[1]}" =~ ^(null|None|~)$ ]] && args+=(--model-id "${BASH_REMATCH[1]}")
    done < <(params_of 03)
    launched semantic semantic extract "$dataset" "${args[@]}"
  fi
  if selected 04; then trained 04 train-ma train-ma; fi
fi

other_protocols() {  # --also-protocol: 02's and 04's training on each further split
  local protocol
  for protocol in "${also[@]+"${also[@]}"}"; do
    if selected 02; then trained 02 train-clip "train-clip_$protocol" --param "protocol=$protocol"; fi
    if selected 04; then trained 04 train-ma "train-ma_$protocol" --param "protocol=$protocol"; fi
  done
}

pending=()  # the notebooks to run next, as scripts/run_notebooks.py jobs
run_jobs() {  # run the pending notebooks in one Python process; it stops at the first failure
  (( ${#pending[@]} == 0 )) && return 0
  (cd "$here/notebooks" && "$py" "$here/scripts/run_notebooks.py" "${pending[@]}") || exit 1
  pending=()
}
echo "[run_all] $dataset, $profile: notebooks in $out/notebooks, logs in $out/logs"
for nb in "$here"/notebooks/[0-9][0-9]_*.ipynb; do
  name="$(basename "$nb" .ipynb)"
  if [[ "${name:0:2}" == 05 && ${#also[@]} -gt 0 ]]; then run_jobs; other_protocols; fi
  selected "${name:0:2}" || continue
  nb_params=()
  while IFS= read -r -d '' item; do
    nb_params+=(-y "${item%%=*}: ${item#*=}")  # YAML value: 20, cuda, [a, b], null
  done < <(params_of "${name:0:2}")
  pending+=(::job "$name" "$out/logs/$name.log" "$nb" "$out/notebooks/$name.ipynb"
         "${params[@]}" "${nb_params[@]+"${nb_params[@]}"}" --cwd "$here/notebooks" --log-output)
done
run_jobs
echo "[run_all] all notebooks done in $(( $(date +%s) - start )) s; outputs in $out"
echo "[run_all] results: $out/results.jsonl; figures: $out/figures"
if [[ -n "$publish" ]]; then
  "$py" "$here/scripts/publish_notebooks.py" "$out" \
    --dest "$publish/notebooks/reference/${dataset}_${profile}" --figures "$publish/figures" \
    ${root:+--root "$root"}
fi
