#!/usr/bin/env bash
# Installs the ota-models device agent (ota-agent) as a systemd service on a Debian-like device.
#
#   sudo ./install-agent.sh --package ota-models-0.1.0.tgz --config cam-01.agent.json
#
# Idempotent: running it again with the same inputs changes nothing (and restarts nothing).
# Run with --help for every option. Exit codes: 0 done, 1 a check or step failed, 2 usage error.
set -euo pipefail

readonly SERVICE=ota-agent
readonly AGENT_USER=ota-agent
readonly AGENT_GROUP=ota-agent
# Paths on the target system. With --root DIR every file is written below DIR instead, but the
# contents (wrapper, unit) still name these paths, as they will be seen on the device.
readonly OPT_DIR=/opt/ota-agent
readonly BIN_PATH=/usr/local/bin/ota-agent
readonly ETC_DIR=/etc/ota-agent
readonly CONFIG_PATH=/etc/ota-agent/config.json
readonly UNIT_PATH=/etc/systemd/system/ota-agent.service
readonly STATE_DIR=/var/lib/ota-agent
readonly MIN_NODE_MAJOR=20
readonly MIN_SYSTEMD=246

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR

usage() {
  cat <<EOF
Usage: install-agent.sh --package DIR|TGZ [--config FILE] [options]

Installs ota-agent under $OPT_DIR, a wrapper $BIN_PATH, the agent config
$CONFIG_PATH and the unit $UNIT_PATH, creates the system user
$AGENT_USER, then enables and starts the service. Run as root.

  --package DIR|TGZ  the built project: a directory holding package.json, dist/ and
                     node_modules/ (npm ci && npm run build && npm prune --omit=dev), or a
                     tarball of one (\`npm pack\` output; without node_modules/ inside, the
                     runtime dependencies are installed with npm, which needs registry access)
  --config FILE      the agent config written by \`otactl device add ID --agent-config FILE\`;
                     installed as $CONFIG_PATH (mode 0640, root:$AGENT_GROUP).
                     Optional when a config is already installed (it is kept).
  --node PATH        the node binary to run the agent with (default: node on PATH; >= $MIN_NODE_MAJOR)
  --no-start         install and enable, but do not start or restart the service now
  --root DIR         install below DIR instead of / (testing, image building): nothing runs
                     as root, no user is created, no systemctl; those steps are printed
                     as "[dry-run] ..." instead. --prefix DIR is the same.
  -h, --help         this text

After installing: systemctl status $SERVICE; journalctl -u $SERVICE -f
EOF
}

say() { printf 'install-agent: %s\n' "$*"; }
die() {
  printf 'install-agent: error: %s\n' "$*" >&2
  exit 1
}
usage_error() {
  printf 'install-agent: usage error: %s\n' "$*" >&2
  printf 'Run install-agent.sh --help for the options.\n' >&2
  exit 2
}

# --- Arguments ----------------------------------------------------------------------------------
ROOT=""
CONFIG_SRC=""
PACKAGE_SRC=""
NODE_BIN=""
START=1

need_value() {
  # $1 option name, $2 number of remaining arguments, $3 the value (if any)
  if [ "$2" -lt 2 ] || [ -z "$3" ]; then usage_error "$1 needs a value"; fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --config)
      need_value "$1" $# "${2:-}"
      CONFIG_SRC=$2
      shift 2
      ;;
    --config=*) CONFIG_SRC=${1#*=} && shift ;;
    --package)
      need_value "$1" $# "${2:-}"
      PACKAGE_SRC=$2
      shift 2
      ;;
    --package=*) PACKAGE_SRC=${1#*=} && shift ;;
    --node)
      need_value "$1" $# "${2:-}"
      NODE_BIN=$2
      shift 2
      ;;
    --node=*) NODE_BIN=${1#*=} && shift ;;
    --root | --prefix)
      need_value "$1" $# "${2:-}"
      ROOT=$2
      shift 2
      ;;
    --root=* | --prefix=*) ROOT=${1#*=} && shift ;;
    --no-start) START=0 && shift ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) usage_error "unknown option '$1'" ;;
  esac
done

[ -n "$PACKAGE_SRC" ] || usage_error "--package DIR|TGZ is required (the built ota-models project or its npm pack tarball)"

DRY=0
if [ -n "$ROOT" ]; then
  DRY=1
  mkdir -p -- "$ROOT" || die "--root $ROOT: cannot create the directory"
  ROOT=$(cd -- "$ROOT" && pwd)
  [ "$ROOT" != / ] || usage_error "--root / is the real system; leave --root out instead"
fi

# Runs a command that needs root and changes the system; with --root it is only printed.
privileged() {
  if [ "$DRY" -eq 1 ]; then
    say "[dry-run] $*"
  else
    "$@"
  fi
}

# --- Preflight checks (nothing is changed until they all pass) ----------------------------------
if [ "$DRY" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "must run as root (it creates a system user and a systemd unit): sudo $0 ..."
fi

if [ -z "$NODE_BIN" ]; then
  NODE_BIN=$(command -v node || true)
  [ -n "$NODE_BIN" ] || die "node not found on PATH: install Node.js $MIN_NODE_MAJOR or newer system-wide (Debian 13: apt-get install nodejs; older releases: the NodeSource packages), or pass --node PATH"
fi
if [ ! -f "$NODE_BIN" ] || [ ! -x "$NODE_BIN" ]; then die "--node $NODE_BIN: not an executable file"; fi
NODE_BIN=$(readlink -f -- "$NODE_BIN")
case "$NODE_BIN" in
  *[!A-Za-z0-9/._+-]*)
    die "node is at '$NODE_BIN': a path with spaces or special characters cannot go into the wrapper; pass --node PATH"
    ;;
  /home/* | /root/* | /run/user/*)
    home_msg="node is at $NODE_BIN, inside a home directory, which the service cannot see (ProtectHome=yes): install Node.js system-wide (e.g. /usr/bin/node) or pass --node PATH"
    # A dry run (tests, image builds) only warns: the device may well have node elsewhere.
    if [ "$DRY" -eq 1 ]; then say "warning: $home_msg"; else die "$home_msg"; fi
    ;;
esac
NODE_VERSION=$("$NODE_BIN" -p 'process.versions.node' 2>/dev/null) || die "$NODE_BIN does not run: check the Node.js installation"
NODE_MAJOR=${NODE_VERSION%%.*}
if ! [ "$NODE_MAJOR" -ge "$MIN_NODE_MAJOR" ] 2>/dev/null; then
  die "node $NODE_VERSION at $NODE_BIN is too old: ota-agent needs Node.js $MIN_NODE_MAJOR or newer"
fi

if [ "$DRY" -eq 0 ]; then
  command -v systemctl >/dev/null 2>&1 || die "systemctl not found: this installer needs a systemd-based system"
  SYSTEMD_VERSION=$(systemctl --version | awk 'NR == 1 { print $2 }')
  if ! [ "${SYSTEMD_VERSION%%.*}" -ge "$MIN_SYSTEMD" ] 2>/dev/null; then
    die "systemd $SYSTEMD_VERSION is too old: the unit relies on systemd-notify waiting for the manager (systemd >= $MIN_SYSTEMD, Debian 11 / Ubuntu 22.04 or newer)"
  fi
  command -v systemd-notify >/dev/null 2>&1 || die "systemd-notify not found: the agent reports readiness with it; install the systemd package"
  if [ "$START" -eq 1 ] && [ ! -d /run/systemd/system ]; then
    die "systemd is not running here (no /run/systemd/system), so the service cannot be started: use --no-start (e.g. in an image build chroot)"
  fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/install-agent.XXXXXX")
STAGING=""
OLD=""
PENDING=""
cleanup() {
  rm -rf -- "$WORK"
  if [ -n "$PENDING" ]; then rm -f -- "$PENDING"; fi
  if [ -n "$STAGING" ]; then rm -rf -- "$STAGING"; fi
  if [ -n "$OLD" ]; then rm -rf -- "$OLD"; fi
}
trap cleanup EXIT

# The package: a directory, or a tarball unpacked into $WORK.
if [ -d "$PACKAGE_SRC" ]; then
  PKG=$(cd -- "$PACKAGE_SRC" && pwd)
elif [ -f "$PACKAGE_SRC" ]; then
  mkdir -p "$WORK/unpacked"
  tar -xzf "$PACKAGE_SRC" -C "$WORK/unpacked" --no-same-owner ||
    die "--package $PACKAGE_SRC: not a readable .tgz (expected the output of npm pack, or a tar.gz of the built project)"
  if [ -f "$WORK/unpacked/package/package.json" ]; then PKG=$WORK/unpacked/package; else PKG=$WORK/unpacked; fi
else
  die "--package $PACKAGE_SRC: no such file or directory"
fi
[ -f "$PKG/package.json" ] || die "--package $PACKAGE_SRC: no package.json in it; pass the ota-models project directory or its npm pack tarball"
[ -f "$PKG/dist/agent/main.js" ] || die "--package $PACKAGE_SRC: no dist/agent/main.js; build it first (npm ci && npm run build)"

UNIT_SRC=""
for candidate in "$PKG/systemd/ota-agent.service" "$SCRIPT_DIR/../systemd/ota-agent.service"; do
  if [ -f "$candidate" ]; then
    UNIT_SRC=$candidate
    break
  fi
done
[ -n "$UNIT_SRC" ] || die "systemd/ota-agent.service not found in the package nor next to this script ($SCRIPT_DIR/../systemd)"

if [ -n "$CONFIG_SRC" ]; then
  if [ ! -f "$CONFIG_SRC" ] || [ ! -r "$CONFIG_SRC" ]; then
    die "--config $CONFIG_SRC: no such readable file (write one with: otactl device add ID --agent-config FILE)"
  fi
  # Never print the file: it holds the device token.
  "$NODE_BIN" -e '
    const v = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
    if (typeof v !== "object" || v === null || Array.isArray(v)) process.exit(3);
  ' "$CONFIG_SRC" 2>/dev/null || die "--config $CONFIG_SRC: not a JSON object; pass the file written by otactl device add ID --agent-config FILE"
elif [ ! -f "$ROOT$CONFIG_PATH" ]; then
  die "no agent config: pass --config FILE (written by otactl device add ID --agent-config FILE); $CONFIG_PATH does not exist yet"
fi

# --- Helpers ------------------------------------------------------------------------------------
# CHANGED: something the running service uses changed (restart it); LAST_CHANGED: the last
# install_content call replaced its file.
CHANGED=0
LAST_CHANGED=0

# install_content MODE DEST: installs stdin as DEST (below $ROOT) unless DEST already has exactly
# these bytes and this mode. Atomic: a temp file (mktemp: mode 0600, so a secret is never
# readable by others) in the same directory, renamed over DEST.
install_content() {
  local mode=$1 dest=$ROOT$2 tmp
  tmp=$(mktemp "$(dirname -- "$dest")/.install-agent.XXXXXX")
  PENDING=$tmp
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest" && [ "$(stat -c %a "$dest")" = "$(stat -c %a "$tmp")" ]; then
    rm -f -- "$tmp"
    PENDING=""
    LAST_CHANGED=0
    say "unchanged $2"
    return 0
  fi
  mv -f -- "$tmp" "$dest"
  PENDING=""
  LAST_CHANGED=1
  CHANGED=1
  say "installed $2"
}

# --- 1. The package, staged next to /opt/ota-agent ----------------------------------------------
mkdir -p -- "$ROOT$(dirname "$OPT_DIR")"
STAGING=$(mktemp -d "$ROOT$(dirname "$OPT_DIR")/.ota-agent.staging.XXXXXX")
for item in package.json dist node_modules npm-shrinkwrap.json package-lock.json README.md LICENSE systemd; do
  if [ -e "$PKG/$item" ]; then cp -a -- "$PKG/$item" "$STAGING/"; fi
done
if [ ! -d "$STAGING/node_modules" ]; then
  command -v npm >/dev/null 2>&1 ||
    die "--package $PACKAGE_SRC has no node_modules/ and npm is not installed: build a package with node_modules (npm ci && npm run build && npm prune --omit=dev) or install npm"
  say "installing runtime dependencies with npm (the package has no node_modules/)"
  (cd -- "$STAGING" && npm install --omit=dev --ignore-scripts --no-audit --no-fund --no-package-lock --loglevel=error >&2) ||
    die "npm install in the package failed (see above): check the network/registry, or build a package with node_modules"
elif [ -d "$STAGING/node_modules/typescript" ]; then
  say "note: node_modules/ holds development dependencies; npm prune --omit=dev before packing saves space"
fi
chmod -R u+rwX,go+rX,go-w -- "$STAGING"
chmod 0755 "$STAGING"

# Validate the config with the agent itself before anything is replaced (its stdout holds a
# summary, never the token, and is dropped; stderr names the offending key).
if [ -n "$CONFIG_SRC" ]; then
  if ! check_err=$("$NODE_BIN" "$STAGING/dist/agent/main.js" --check-config --config "$CONFIG_SRC" 2>&1 >/dev/null); then
    die "the agent rejects --config $CONFIG_SRC: ${check_err:-no reason given}"
  fi
fi

# --- 2. User and group (the first change to the system) -----------------------------------------
if [ "$DRY" -eq 1 ]; then
  say "[dry-run] groupadd --system $AGENT_GROUP (if missing)"
  say "[dry-run] useradd --system --no-create-home --home-dir $STATE_DIR --shell /usr/sbin/nologin --gid $AGENT_GROUP $AGENT_USER (if missing)"
else
  if ! getent group "$AGENT_GROUP" >/dev/null; then
    groupadd --system "$AGENT_GROUP"
    say "created group $AGENT_GROUP"
  fi
  if ! getent passwd "$AGENT_USER" >/dev/null; then
    useradd --system --no-create-home --home-dir "$STATE_DIR" --shell /usr/sbin/nologin \
      --gid "$AGENT_GROUP" --comment "ota-models device agent" "$AGENT_USER"
    say "created user $AGENT_USER"
  fi
fi

# --- 3. The package: swapped in when it differs from the installed one --------------------------
# The agent must not be able to change its own code: root owns it, nobody else may write.
if [ -d "$ROOT$OPT_DIR" ] && diff -rq --no-dereference -- "$ROOT$OPT_DIR" "$STAGING" >/dev/null 2>&1; then
  say "unchanged $OPT_DIR"
else
  if [ "$DRY" -eq 1 ]; then
    say "[dry-run] chown -R root:root $OPT_DIR"
  else
    chown -R root:root "$STAGING"
  fi
  if [ -d "$ROOT$OPT_DIR" ]; then
    OLD=$ROOT$OPT_DIR.old.$$
    mv -- "$ROOT$OPT_DIR" "$OLD"
  fi
  if ! mv -- "$STAGING" "$ROOT$OPT_DIR"; then
    if [ -n "$OLD" ]; then mv -- "$OLD" "$ROOT$OPT_DIR" && OLD=""; fi
    die "could not move the new package into $ROOT$OPT_DIR (the previous one is kept)"
  fi
  STAGING=""
  CHANGED=1
  say "installed $OPT_DIR ($("$NODE_BIN" -p 'require(process.argv[1]).version' "$ROOT$OPT_DIR/package.json"))"
fi

# --- 4. The wrapper /usr/local/bin/ota-agent ----------------------------------------------------
mkdir -p -- "$ROOT$(dirname "$BIN_PATH")"
install_content 0755 "$BIN_PATH" <<EOF
#!/bin/sh
# Written by install-agent.sh: runs the ota-models device agent installed in $OPT_DIR.
exec $NODE_BIN --max-semi-space-size=1 --no-opt $OPT_DIR/dist/agent/main.js "\$@"
EOF

# --- 5. The config /etc/ota-agent/config.json ---------------------------------------------------
mkdir -p -- "$ROOT$ETC_DIR"
chmod 0750 "$ROOT$ETC_DIR"
privileged chown root:"$AGENT_GROUP" "$ETC_DIR"
if [ -n "$CONFIG_SRC" ]; then
  install_content 0640 "$CONFIG_PATH" <"$CONFIG_SRC"
  privileged chown root:"$AGENT_GROUP" "$CONFIG_PATH"
else
  say "kept $CONFIG_PATH"
fi

# --- 6. The unit, with ExecStart= naming the wrapper --------------------------------------------
mkdir -p -- "$ROOT$(dirname "$UNIT_PATH")"
sed -e "s#^ExecStart=.*#ExecStart=$BIN_PATH --config $CONFIG_PATH#" -- "$UNIT_SRC" >"$WORK/unit"
install_content 0644 "$UNIT_PATH" <"$WORK/unit"
UNIT_CHANGED=$LAST_CHANGED

# --- 7. systemd ---------------------------------------------------------------------------------
if [ "$DRY" -eq 1 ]; then
  if [ "$UNIT_CHANGED" -eq 1 ]; then say "[dry-run] systemctl daemon-reload"; fi
  say "[dry-run] systemctl enable $SERVICE (if not enabled)"
  if [ "$START" -eq 1 ]; then
    if [ "$CHANGED" -eq 1 ]; then
      say "[dry-run] systemctl restart $SERVICE (if running; else start)"
    else
      say "[dry-run] systemctl start $SERVICE (if not running)"
    fi
  fi
  say "done (dry run below $ROOT; nothing outside it was changed)"
  exit 0
fi

if [ -d /run/systemd/system ]; then
  if [ "$UNIT_CHANGED" -eq 1 ]; then systemctl daemon-reload; fi
fi
if ! systemctl is-enabled --quiet "$SERVICE" 2>/dev/null; then
  systemctl enable --quiet "$SERVICE"
  say "enabled $SERVICE"
fi
if [ "$START" -eq 0 ]; then
  say "done; not started (--no-start): systemctl start $SERVICE"
  exit 0
fi
if systemctl is-active --quiet "$SERVICE"; then
  if [ "$CHANGED" -eq 1 ]; then
    say "restarting $SERVICE"
    systemctl restart "$SERVICE" || die "$SERVICE did not restart: journalctl -u $SERVICE -n 50 --no-pager"
  else
    say "$SERVICE is running; nothing changed"
  fi
else
  say "starting $SERVICE (it reports ready after its first broker connection, or after 30 s offline)"
  systemctl start "$SERVICE" || die "$SERVICE did not start: journalctl -u $SERVICE -n 50 --no-pager"
fi
say "done: systemctl status $SERVICE; journalctl -u $SERVICE -f"
