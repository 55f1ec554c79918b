"""The bash scripts :mod:`deploy.host` runs on the target with :meth:`deploy.remote.Target.run`.

Each prints ``key=value`` lines the orchestrator parses (:func:`deploy.remote.parse_kv`).
``$1`` is always the target root.
"""

# Make a directory tree root's and unwritable by group and others, before root runs
# anything from it: symbolic links are changed themselves, never followed (-h, -P).
ROOT_OWN = r"""
root_own() {
  chown -R -h -P root:root "$@"
  chmod -R go-w "$@"
}
"""

CHECK = r"""
set -u
R="${1%/}"; PY="$2"
echo "uid=$(id -u)"
echo "arch=$(uname -m)"
[ -r "$R/etc/nv_tegra_release" ] && echo "nv_tegra_release=$(head -n1 "$R/etc/nv_tegra_release")"
if command -v "$PY" >/dev/null 2>&1; then
  "$PY" - <<'PYEOF' 2>/dev/null
import importlib.util as u
import sys
print("python=%d.%d.%d" % sys.version_info[:3])
print("venv=" + ("yes" if u.find_spec("venv") else "no"))
print("pip=" + ("yes" if u.find_spec("pip") else "no"))
try:
    import tensorrt
    print("tensorrt=" + tensorrt.__version__)
except Exception:
    print("tensorrt=")
PYEOF
fi
for c in rsync systemctl systemd-sysusers useradd sha256sum; do
  command -v "$c" >/dev/null 2>&1 && echo "has_$c=yes"
done
d="$R/opt"; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "free_mb=$(df -Pk "$d" | awk 'NR==2 {print int($4/1024)}')"
BASE="$R/opt/crystal-psd"
[ -L "$BASE/current" ] && echo "current=$(basename "$(readlink "$BASE/current")")"
[ -d "$BASE/releases" ] && echo "releases=$(ls -1 "$BASE/releases" | tr '\n' ' ')"
CFG="$R/etc/crystal-edge/config.toml"
[ -f "$CFG" ] && echo "config_sha256=$(sha256sum "$CFG" | cut -d' ' -f1)"
UNIT="$R/etc/systemd/system/crystal-edge.service"
[ -f "$UNIT" ] && echo "unit_sha256=$(sha256sum "$UNIT" | cut -d' ' -f1)"
exit 0
"""

CAT = r"""
R="${1%/}"; f="$R/$2"
[ -f "$f" ] && cat "$f"
exit 0
"""

# Prepare the release in place (venv, package, units, account, config); flip `current`
# only after everything else succeeded, so a failure here leaves the running release.
INSTALL = ROOT_OWN + r"""
set -euo pipefail
umask 022
R="${1%/}"; NAME="$2"; PY="$3"; PIP_MODE="$4"; WHEEL="$5"; EXTRAS="$6"
CONFIG_ACTION="$7"; CONFIG_SRC="$8"; STAMP="$9"; RESTART="${10}"
BASE="$R/opt/crystal-psd"; REL="$BASE/releases/$NAME"
step() { echo "step=$*" >&2; }

step owner
# --link-dest links files of the previous release, which an older deploy may have left
# owned by the workstation's uid: own the whole release, not only what rsync wrote.
chown root:root "$BASE" "$BASE/releases"
chmod go-w "$BASE" "$BASE/releases"
root_own "$REL"
[ -d "$BASE/wheelhouse" ] && root_own "$BASE/wheelhouse"

step venv
if [ ! -x "$REL/venv/bin/python" ]; then
  # --system-site-packages: TensorRT, cuda-python and CUDA-enabled OpenCV from JetPack
  "$PY" -m venv --system-site-packages --without-pip "$REL/venv"
fi
VPY="$REL/venv/bin/python"
if ! "$VPY" -m pip --version >/dev/null 2>&1; then "$VPY" -m ensurepip --default-pip >/dev/null; fi
PIP=("$VPY" -m pip --disable-pip-version-check --no-input -q)
WHL="$REL/wheels/$WHEEL"
step "pip ($PIP_MODE)"
if [ "$PIP_MODE" = auto ]; then
  if [ -d "$BASE/wheelhouse" ]; then PIP_MODE=wheelhouse; else PIP_MODE=index; fi
  step "pip mode auto -> $PIP_MODE"
fi
case "$PIP_MODE" in
  no-deps) ;;  # dependencies already in the system site-packages
  wheelhouse) "${PIP[@]}" install --no-index --find-links "$BASE/wheelhouse" "$WHL$EXTRAS" ;;
  index) "${PIP[@]}" install "$WHL$EXTRAS" ;;
  *) echo "unknown pip mode $PIP_MODE" >&2; exit 2 ;;
esac
# The package itself always into the venv (even if a system copy exists).
"${PIP[@]}" install --no-index --no-deps --ignore-installed "$WHL"
step smoke-test
"$VPY" -c 'import edge, edge.cli; print("package_version=" + edge.__version__)'
[ -x "$REL/venv/bin/crystal-edge" ]

step units
install -d -m 0755 "$R/etc/systemd/system" "$R/etc/sysusers.d"
install -m 0644 "$REL/systemd/crystal-edge.service" "$R/etc/systemd/system/crystal-edge.service"
install -m 0644 "$REL/systemd/crystal-edge.sysusers.conf" "$R/etc/sysusers.d/crystal-edge.conf"
step account
if command -v systemd-sysusers >/dev/null 2>&1; then
  if [ -z "$R" ]; then systemd-sysusers /etc/sysusers.d/crystal-edge.conf >&2
  else systemd-sysusers --root="$R" "$R/etc/sysusers.d/crystal-edge.conf" >&2; fi
elif [ -z "$R" ] && ! id crystal-edge >/dev/null 2>&1; then
  useradd --system --user-group --home-dir /var/lib/crystal-edge --shell /usr/sbin/nologin \
          --groups video crystal-edge
fi

step config
CFGDIR="$R/etc/crystal-edge"
install -d -m 0755 "$CFGDIR"
install -d -m 0700 "$CFGDIR/credentials"
# LoadCredential= refuses to start the unit when the file is missing: create it empty.
PWFILE="$CFGDIR/credentials/mqtt-password"
[ -e "$PWFILE" ] || install -m 0600 /dev/null "$PWFILE"
case "$CONFIG_ACTION" in
  install) install -m 0644 "$REL/$CONFIG_SRC" "$CFGDIR/config.toml" ;;
  replace)
    cp -p "$CFGDIR/config.toml" "$CFGDIR/config.toml.bak-$STAMP"
    echo "config_backup=/etc/crystal-edge/config.toml.bak-$STAMP"
    install -m 0644 "$REL/$CONFIG_SRC" "$CFGDIR/config.toml" ;;
  keep|unchanged) ;;
  *) echo "unknown config action $CONFIG_ACTION" >&2; exit 2 ;;
esac

step switch
# `crystal-edge status` etc. on the PATH of an administrator's shell
install -d -m 0755 "$R/usr/local/bin"
ln -sfn /opt/crystal-psd/current/venv/bin/crystal-edge "$R/usr/local/bin/crystal-edge"
PREV=""
[ -L "$BASE/current" ] && PREV="$(basename "$(readlink "$BASE/current")")"
echo "previous=$PREV"
ln -sfn "releases/$NAME" "$BASE/current.new"
mv -T "$BASE/current.new" "$BASE/current"
echo "current=$NAME"

if [ "$RESTART" = 1 ]; then
  step restart
  U=crystal-edge.service
  systemctl daemon-reload
  systemctl enable "$U" >&2
  echo "old_invocation=$(systemctl show -p InvocationID --value "$U" 2>/dev/null || true)"
  echo "restarted_at=$(date +%s)"
  systemctl restart --no-block crystal-edge.service
fi
"""

# Wait until the restart job is done, then require `active` for SETTLE seconds.
WAIT = r"""
set -u
TIMEOUT="$2"; SETTLE="$3"; POLL="$4"; OLD_INV="${5:-}"
U=crystal-edge.service
start=$(date +%s)
state=unknown
while :; do
  jobs="$(systemctl list-jobs --no-legend "$U" 2>/dev/null || true)"
  state="$(systemctl is-active "$U" 2>/dev/null || true)"
  state="${state:-unknown}"
  inv="$(systemctl show -p InvocationID --value "$U" 2>/dev/null || true)"
  # Crashed and waiting to be restarted by Restart=on-failure: this start failed.
  sub="$(systemctl show -p SubState --value "$U" 2>/dev/null || true)"
  if [ "$sub" = auto-restart ]; then state="failed(auto-restart)"; break; fi
  # The instance from before the restart (restart job not processed yet): not an answer.
  if [ -n "$OLD_INV" ] && [ "$inv" = "$OLD_INV" ]; then jobs="old instance"; fi
  if [ -z "$jobs" ]; then
    case "$state" in
      active)
        sleep "$SETTLE"
        state="$(systemctl is-active "$U" 2>/dev/null || true)"
        case "$state" in
          active|failed|inactive) break ;;
        esac ;;  # activating again (restarted meanwhile): keep watching
      failed|inactive) break ;;
    esac
  fi
  if [ $(( $(date +%s) - start )) -ge "$TIMEOUT" ]; then state="timeout($state)"; break; fi
  sleep "$POLL"
done
echo "state=$state"
"""

# After `active`: wait until the new process reports its MQTT connection in status.json
# (`crystal-edge status --json`): connected, or no MQTT sink configured.
WAIT_MQTT = r"""
set -u
R="${1%/}"; SINCE="$2"; TIMEOUT="$3"; POLL="$4"; SD="$R$5"
CUR="$R/opt/crystal-psd/current"
start=$(date +%s)
while :; do
  line="$("$CUR/venv/bin/crystal-edge" status --json --state-dir "$SD" 2>/dev/null \
    | "$CUR/venv/bin/python" -c '
import json, sys
from datetime import datetime
d = json.load(sys.stdin)
started = (d.get("snapshot") or d).get("started")
new = bool(started) and datetime.fromisoformat(started).timestamp() >= float(sys.argv[1]) - 2
print((d.get("mqtt") or "none") + " " + ("new" if new and not d.get("stale") else "old"))
' "$SINCE" 2>/dev/null || echo "unknown old")"
  case "$line" in
    "connected new") echo "mqtt=connected"; exit 0 ;;
    "none new") echo "mqtt=none"; exit 0 ;;
  esac
  if [ $(( $(date +%s) - start )) -ge "$TIMEOUT" ]; then echo "mqtt=timeout ($line)"; exit 0; fi
  sleep "$POLL"
done
"""

# Back to the previous release: symlink, its unit, the config backup; restart.
ROLLBACK = ROOT_OWN + r"""
set -euo pipefail
umask 022
R="${1%/}"; FAILED="$2"; PREV="$3"; BACKUP="$4"; RESTART="$5"
BASE="$R/opt/crystal-psd"
[ -d "$BASE/releases/$PREV" ] || { echo "previous release $PREV is gone" >&2; exit 1; }
# its unit and venv are about to be used by root (an older deploy may have left it owned
# by the workstation's uid)
root_own "$BASE/releases/$PREV"
ln -sfn "releases/$PREV" "$BASE/current.new"
mv -T "$BASE/current.new" "$BASE/current"
if [ -f "$BASE/releases/$PREV/systemd/crystal-edge.service" ]; then
  install -m 0644 "$BASE/releases/$PREV/systemd/crystal-edge.service" \
    "$R/etc/systemd/system/crystal-edge.service"
fi
if [ -n "$BACKUP" ] && [ -f "$R$BACKUP" ]; then
  cp -p "$R$BACKUP" "$R/etc/crystal-edge/config.toml"
  echo "config_restored=$BACKUP"
fi
date -u +%FT%TZ > "$BASE/releases/$FAILED/DEPLOY_FAILED"
echo "current=$PREV"
if [ "$RESTART" = 1 ]; then
  U=crystal-edge.service
  systemctl daemon-reload
  echo "old_invocation=$(systemctl show -p InvocationID --value "$U" 2>/dev/null || true)"
  systemctl restart --no-block crystal-edge.service
fi
"""

MKDIRS = r"""
set -eu
umask 022
R="${1%/}"
mkdir -p "$R/opt/crystal-psd/releases"
"""

# A release whose preparation failed before the switch: remove it.
DISCARD = r"""
set -eu
R="${1%/}"; NAME="$2"
BASE="$R/opt/crystal-psd"
[ "$(basename "$(readlink "$BASE/current" 2>/dev/null || true)")" = "$NAME" ] && exit 1
rm -rf "$BASE/releases/$NAME"
"""

# Keep the newest KEEP releases plus current and previous; print what was removed.
PRUNE = r"""
set -eu
R="${1%/}"; KEEP="$2"; PREV="$3"
BASE="$R/opt/crystal-psd"
CUR="$(basename "$(readlink "$BASE/current" 2>/dev/null || true)")"
n=0
# newest first by the timestamp suffix (<version>-<YYYYmmddTHHMMSSZ>), whatever the version
by_age="$(for r in $(ls -1 "$BASE/releases"); do echo "${r##*-} $r"; done | sort -r)"
for d in $(echo "$by_age" | cut -d' ' -f2); do
  n=$((n + 1))
  if [ "$n" -le "$KEEP" ] || [ "$d" = "$CUR" ] || [ "$d" = "$PREV" ]; then continue; fi
  rm -rf "$BASE/releases/$d"
  echo "pruned=$d"
done
"""
