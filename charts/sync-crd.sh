#!/usr/bin/env bash
# Regenerates charts/floe-crds/templates/storagecluster.yaml from crds/storagecluster.yaml (the
# CRD generated from the Rust types by `floe crd`): the same spec, with Helm labels and
# `helm.sh/resource-policy: keep`. A test (operator/tests/chart.rs) fails when they differ.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/crds/storagecluster.yaml"
dst="$repo/charts/floe-crds/templates/storagecluster.yaml"
if ! grep -q '^spec:$' "$src"; then
  echo "sync-crd: $src has no top-level spec:" >&2
  exit 1
fi
if grep -q '{{' "$src"; then
  echo "sync-crd: $src contains '{{', which Helm would interpret; escape it here first" >&2
  exit 1
fi
name="$(awk '/^metadata:$/ {m=1; next} m && /^  name: / {print $2; exit}' "$src")"
{
  cat <<HEADER
# Generated from crds/storagecluster.yaml by charts/sync-crd.sh; do not edit by hand.
# A template, not crds/: Helm installs a chart's crds/ folder once and never upgrades it.
# resource-policy keep: helm uninstall leaves the CRD, so StorageClusters (and their data) survive.
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: $name
  labels:
    app.kubernetes.io/name: floe-crds
    app.kubernetes.io/part-of: floe
    app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
    app.kubernetes.io/managed-by: {{ .Release.Service }}
    helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
    {{- with .Values.commonLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    helm.sh/resource-policy: keep
    {{- with .Values.commonAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
HEADER
  sed -n '/^spec:$/,$p' "$src"
} >"$dst.tmp"
mv "$dst.tmp" "$dst"
echo "sync-crd: wrote $dst" >&2
