#!/usr/bin/env bash
# Runs the Bazel tests of tf_autoseg fully offline, with the project's venv.
#
# Usage: .ci/bazel_test.sh [bazel test flags ...] [targets ...]
#   targets default to //:test_layers //:test_orderings; arguments starting
#   with "-" are passed to `bazel test` as extra flags (e.g.
#   --nocache_test_results, --test_output=all).
#
# Environment:
#   VENV                    venv with `pip install -e ".[test]"` done
#                           (default: <repo root>/.venv; relative paths are
#                           taken from the current directory)
#   BAZEL_OUTPUT_USER_ROOT  Bazel's output tree and disk cache
#                           (default: ${TMPDIR:-/tmp}/bazel-tf_autoseg-<uid>)
#   BAZEL_PLATFORMS_DIR     @platforms   (default: /usr/share/bazel/tools/platforms)
#   BAZEL_RULES_JAVA_DIR    @rules_java  (default: /usr/share/bazel/rules/java)
#
# Needs only: apt-get install -y bazel-bootstrap bazel-platforms bazel-rules-java
# (Debian's Bazel 4.2.3). Nothing is downloaded: every repository Bazel would
# fetch is overridden with a local one (--override_repository below).
set -euo pipefail

die() { echo "bazel_test.sh: error: $*" >&2; exit 2; }

caller_pwd="$PWD"
script_dir="${BASH_SOURCE[0]%/*}"
[[ "$script_dir" != "${BASH_SOURCE[0]}" ]] || script_dir=.
repo_root="$(cd "$script_dir/.." && pwd -P)"
cd "$repo_root"

# --- prerequisites ------------------------------------------------------------
apt_hint="install them with: sudo apt-get install -y bazel-bootstrap bazel-platforms bazel-rules-java"
command -v bazel >/dev/null 2>&1 || die "'bazel' not found on PATH; $apt_hint"
platforms_dir="${BAZEL_PLATFORMS_DIR:-/usr/share/bazel/tools/platforms}"
rules_java_dir="${BAZEL_RULES_JAVA_DIR:-/usr/share/bazel/rules/java}"
[[ -f "$platforms_dir/WORKSPACE" ]] || die "no @platforms repository at $platforms_dir (package bazel-platforms); $apt_hint"
[[ -f "$rules_java_dir/WORKSPACE" ]] || die "no @rules_java repository at $rules_java_dir (package bazel-rules-java); $apt_hint"

venv="${VENV:-$repo_root/.venv}"
[[ "$venv" == /* ]] || venv="$caller_pwd/$venv"
[[ -x "$venv/bin/python" ]] || die "no python at $venv/bin/python; create the venv first (python3.11 -m venv \"\$VENV\" && \"\$VENV/bin/pip\" install -e \".[test]\") or set VENV"
venv="$(cd "$venv" && pwd)"  # normalise, keeping symlinks: a venv is found through its own path

out_root="${BAZEL_OUTPUT_USER_ROOT:-${TMPDIR:-/tmp}/bazel-tf_autoseg-$(id -u)}"
mkdir -p "$out_root"

# --- arguments ----------------------------------------------------------------
flags=()
targets=()
for arg in "$@"; do
  if [[ "$arg" == -* ]]; then flags+=("$arg"); else targets+=("$arg"); fi
done
(( ${#targets[@]} )) || targets=(//:test_layers //:test_orderings)

# --- run ----------------------------------------------------------------------
# Startup options: keep the server's files out of the repo and out of ~/.cache;
# stop an idle server after 15 minutes. /etc/bazel/bazelrc (Debian) must stay
# active: it sets --install_base=/usr/share/bazel and --host_javabase=@local_jdk.
#
# --symlink_prefix=/       no bazel-* convenience symlinks in the work tree.
# --override_repository    the repositories Bazel 4.2.3 would download:
#                          rules_cc and remote_coverage_tools are stubs in
#                          tools/bazel/, platforms and rules_java come from
#                          Debian packages.
# --repo_env=VENV          read by tools/bazel/python_venv.bzl: the interpreter.
# --nosandbox_debug        undo Debian's --sandbox_debug (sandbox trace lines
#                          in every failing test log, sandboxes kept on disk).
# --jobs/--local_*         modest CPU use (2-core CI machines); the tests
#                          themselves run one at a time.
# Sandboxing is left at Bazel's default (linux-sandbox, or processwrapper-sandbox
# where user namespaces are unavailable): the sandbox still shows the whole
# filesystem read-only, so the venv outside the runfiles works; no need for
# --spawn_strategy=local/standalone (both also work, if ever wanted).
set -x
exec bazel \
  --output_user_root="$out_root" \
  --max_idle_secs=900 \
  test \
  --symlink_prefix=/ \
  --disk_cache="$out_root/disk_cache" \
  --override_repository=rules_cc="$repo_root/tools/bazel/rules_cc" \
  --override_repository=remote_coverage_tools="$repo_root/tools/bazel/remote_coverage_tools" \
  --override_repository=platforms="$platforms_dir" \
  --override_repository=rules_java="$rules_java_dir" \
  --repo_env=VENV="$venv" \
  --nosandbox_debug \
  --test_output=errors \
  --verbose_failures \
  --jobs=1 \
  --local_cpu_resources=1 \
  --local_test_jobs=1 \
  ${flags[@]+"${flags[@]}"} \
  -- "${targets[@]}"
