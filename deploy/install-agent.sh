#!/usr/bin/env bash
# Install the Forecaster edge agent on a kiosk or gateway: a venv with the edge package only
# (no torch, no pandas), its config, its state directories and a systemd unit.
#
#   sudo deploy/install-agent.sh --agent-id kiosk-01 --broker mqtts://broker.example.net:8883 \
#        --username kiosk-01 --password-file kiosk-01.password --ca ca.crt --trusted-key signing.pub
#
# Options:
#   --agent-id ID          agent name in topics (fleet/<ID>/...)                       (required)
#   --broker URL           mqtt://host:1883 or mqtts://host:8883                        (required)
#   --username U           broker account (default: the agent id)
#   --password-file F      file holding the broker password; stored in etc/agent.env (mode 600)
#   --ca FILE              CA certificate of the broker (copied to etc/ca.crt)
#   --trusted-key FILE     public key whose bundle signatures the agent accepts (repeatable)
#   --source DIR|WHEEL     what to pip install (default: the checkout this script is in)
#   --prefix DIR           install root (default /opt/forecaster)
#   --user NAME            system user that runs the agent (default forecaster; created if missing)
#   --systemd-dir DIR      where the unit goes (default /etc/systemd/system)
#   --no-enable            write everything but do not enable/start the unit (tests, images)
#   --python PY            interpreter for the venv (default python3; needs 3.11+)
# Re-running upgrades the package and rewrites the config; state and models are kept.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
agent_id="" broker="" username="" password_file="" ca="" source="$here/.." prefix=/opt/forecaster
run_user=forecaster systemd_dir=/etc/systemd/system enable=1 python=python3
trusted=()

die() { echo "install-agent: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        --agent-id) agent_id=$2; shift 2 ;;
        --broker) broker=$2; shift 2 ;;
        --username) username=$2; shift 2 ;;
        --password-file) password_file=$2; shift 2 ;;
        --ca) ca=$2; shift 2 ;;
        --trusted-key) trusted+=("$2"); shift 2 ;;
        --source) source=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --user) run_user=$2; shift 2 ;;
        --systemd-dir) systemd_dir=$2; shift 2 ;;
        --no-enable) enable=0; shift ;;
        --python) python=$2; shift 2 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$agent_id" ] || die "--agent-id is required"
[[ $agent_id =~ ^[A-Za-z0-9_.-]+$ ]] || die "agent id may hold only letters, digits, '.', '-' and '_'"
[ -n "$broker" ] || die "--broker is required"
[ ${#trusted[@]} -gt 0 ] || die "at least one --trusted-key is required (the agent loads only signed bundles)"
for f in "${trusted[@]}" ${ca:+"$ca"} ${password_file:+"$password_file"}; do
    [ -f "$f" ] || die "file not found: $f"
done
username=${username:-$agent_id}
prefix=$(mkdir -p "$prefix" && cd "$prefix" && pwd)

echo "installing the edge agent into $prefix/venv"
"$python" -m venv "$prefix/venv"
"$prefix/venv/bin/python" -m pip install --quiet --upgrade pip
"$prefix/venv/bin/python" -m pip install --quiet "$source"

mkdir -p "$prefix/etc/keys" "$prefix/var/state" "$prefix/var/models" "$prefix/share/forecaster"
for f in "${trusted[@]}"; do cp "$f" "$prefix/etc/keys/"; done
ca_line="# ca_file: system CAs"
if [ -n "$ca" ]; then
    cp "$ca" "$prefix/etc/ca.crt"
    ca_line="ca_file = \"$prefix/etc/ca.crt\""
fi
[ -f "$here/../docs/DEPLOY.md" ] && cp "$here/../docs/DEPLOY.md" "$prefix/share/forecaster/"

cat > "$prefix/etc/agent.toml" <<TOML
# Written by deploy/install-agent.sh; every key is documented in deploy/agent.example.toml.
agent_id = "$agent_id"
state_dir = "$prefix/var/state"

[broker]
url = "$broker"
username = "$username"
$ca_line

[models]
dir = "$prefix/var/models"
trusted_keys = ["$prefix/etc/keys"]
TOML

umask 077
: > "$prefix/etc/agent.env"
if [ -n "$password_file" ]; then
    # The password stays out of agent.toml; systemd passes it as an environment variable.
    printf 'FORECASTER_AGENT_BROKER__PASSWORD=%s\n' "$(head -n1 "$password_file")" > "$prefix/etc/agent.env"
fi
umask 022

mkdir -p "$systemd_dir"
sed -e "s#@PREFIX@#$prefix#g" -e "s#@USER@#$run_user#g" "$here/forecaster-agent.service" \
    > "$systemd_dir/forecaster-agent.service"

if [ "$(id -u)" = 0 ] && ! id "$run_user" >/dev/null 2>&1; then
    useradd --system --home-dir "$prefix" --shell /usr/sbin/nologin "$run_user"
fi
if [ "$(id -u)" = 0 ] && id "$run_user" >/dev/null 2>&1; then
    chown -R "$run_user:" "$prefix/var"
    chown "$run_user:" "$prefix/etc/agent.env"
fi

# Prove the install works before handing it to systemd: the settings load, the keys parse.
"$prefix/venv/bin/python" - "$prefix/etc/agent.toml" <<'PY'
import sys
from pathlib import Path

from device.keys import load_trusted_keys
from device.settings import load_settings

settings = load_settings(Path(sys.argv[1]))
keys = load_trusted_keys(list(settings.models.trusted_keys))
print(f"config ok: agent {settings.agent_id}, {len(keys)} trusted key(s)")
PY

if [ "$enable" = 1 ]; then
    command -v systemctl >/dev/null || die "systemctl not found; rerun with --no-enable and start the agent yourself"
    systemctl daemon-reload
    systemctl enable --now forecaster-agent.service
    echo "forecaster-agent enabled and started: journalctl -u forecaster-agent -f"
else
    echo "unit written to $systemd_dir/forecaster-agent.service (not enabled)"
fi
