#!/usr/bin/env bash
# Renders every kustomization under deploy/k8s and validates the result offline against the
# Kubernetes API schemas bundled in the kubernetes-validate package (strict: unknown fields fail).
# Exits non-zero on any error. Usage: bash deploy/k8s/validate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

# 1.29: the oldest release with everything used here on by default (backoffLimitPerIndex and the
# FailIndex action); 1.32: this machine's kubectl, whose kustomize renders the manifests.
versions=(1.29.0 1.32.0)
kustomizations=(base batch overlays/example overlays/example/batch)
venv=target/k8s-venv
pin=kubernetes-validate==1.37.0

command -v kubectl >/dev/null || { echo "kubectl not found: it renders the manifests (kubectl kustomize)" >&2; exit 1; }

if ! "$venv/bin/pip" show --quiet kubernetes-validate 2>/dev/null \
  || [ "$("$venv/bin/kubernetes-validate" --version)" != "${pin#*==}" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$pin"
fi

# Rendering must need no network (no remote bases or Helm charts): cut it off where we can.
offline=()
if unshare -rn true 2>/dev/null; then offline=(unshare -rn); fi

out=target/k8s-rendered
rm -rf "$out"
mkdir -p "$out"
for k in "${kustomizations[@]}"; do
  f="$out/${k//\//-}.yaml"
  "${offline[@]}" kubectl kustomize "deploy/k8s/$k" >"$f"
  echo "rendered deploy/k8s/$k: $(grep -c '^kind:' "$f") objects"
done

# components/small-model is in none of them: render it over base and batch, in throwaway
# kustomizations under target/.
tmp=target/k8s-small-model
rm -rf "$tmp"
for k in base batch; do
  mkdir -p "$tmp/$k"
  printf '%s\n' "apiVersion: kustomize.config.k8s.io/v1beta1" "kind: Kustomization" \
    "resources: [../../../deploy/k8s/$k]" \
    "components: [../../../deploy/k8s/components/small-model]" >"$tmp/$k/kustomization.yaml"
  f="$out/small-model-$k.yaml"
  "${offline[@]}" kubectl kustomize "$tmp/$k" >"$f"
  echo "rendered deploy/k8s/$k + components/small-model: $(grep -c '^kind:' "$f") objects"
done

args=(--strict --quiet)
for v in "${versions[@]}"; do args+=(-k "$v"); done
set +e
report=$("$venv/bin/kubernetes-validate" "${args[@]}" "$out"/*.yaml 2>&1)
rc=$?
set -e
[ -z "$report" ] || echo "$report"
# A kind or apiVersion without a schema is only a WARN with exit 0: count it as an error too.
if [ "$rc" -ne 0 ] || [ -n "$report" ]; then
  echo "deploy/k8s: validation failed" >&2
  exit 1
fi

# What the schemas cannot see: each batch Job runs as many pods as it has shards, and
# components/small-model reaches every Deployment and Job it is applied to.
"$venv/bin/python" - "$out"/*.yaml <<'PY'
import os, sys, yaml
bad = []
for path in sys.argv[1:]:
    small = os.path.basename(path).startswith("small-model-")
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") not in ("Deployment", "Job"):
            continue
        spec = doc["spec"]
        name = f"{path}: {doc['kind']} {doc['metadata']['name']}"
        env = {e["name"]: e.get("value") for c in spec["template"]["spec"]["containers"] for e in c.get("env", [])}
        if small and env.get("STANCE_MODEL") != "models/minilm-l6-stance":
            bad.append(f"{name}: STANCE_MODEL {env.get('STANCE_MODEL')} with components/small-model")
        if doc["kind"] == "Job" and str(spec.get("completions")) != env.get("STANCE_SHARD"):
            bad.append(f"{name}: completions {spec.get('completions')} but STANCE_SHARD {env.get('STANCE_SHARD')}")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY

# The lexicon is TOML the schemas cannot check: have the binary load it, where one is built.
bin=${STANCE_BIN:-target/release/stance}
if [ -x "$bin" ]; then
  echo "Moscow and Ankara agreed." | "$bin" score --actors deploy/k8s/components/actors/actors.toml \
    --format json - >/dev/null
  echo "lexicon loads: deploy/k8s/components/actors/actors.toml"
else
  echo "no $bin: lexicon not checked (cargo build --release first)" >&2
fi
echo "deploy/k8s: $(ls "$out" | wc -l) kustomizations valid against Kubernetes ${versions[*]} (strict)"
