#!/usr/bin/env bash
# The build server's daily job: update a checkout of the machines' flake,
# optionally update its inputs, build every machine's system closure and push
# each into the Pi's cache with a gc root named after the machine.
#
# Environment (set by nix/modules/build-server.nix; also runnable by hand):
#   FLAKE_REPO      git URL (or local path) of the flake that defines nixosConfigurations
#   FLAKE_BRANCH    branch to follow (default: the remote's default branch)
#   MACHINES        space-separated nixosConfigurations names
#   PUSH_TARGET     DIR or ssh://[user@]host/path of the Pi's cache
#   KEY_FILE        Nix secret key file that signs the cache
#   UPDATE_INPUTS   1: `nix flake update` before building (default 1)
#   COMMIT_LOCK     1: commit the updated flake.lock and `git push` it (default 0)
#   WORK_DIR        where the checkout and result links live (default $STATE_DIRECTORY or .)
#   COMPRESSION     xz or zstd (default: the CLI's default)
set -euo pipefail

: "${FLAKE_REPO:?FLAKE_REPO is not set}"
: "${MACHINES:?MACHINES is not set}"
: "${PUSH_TARGET:?PUSH_TARGET is not set}"
: "${KEY_FILE:?KEY_FILE is not set}"
UPDATE_INPUTS="${UPDATE_INPUTS:-1}"
COMMIT_LOCK="${COMMIT_LOCK:-0}"
WORK_DIR="${WORK_DIR:-${STATE_DIRECTORY:-$PWD}}"
checkout="$WORK_DIR/flake"

log() { printf 'nix-lan-cache-build: %s\n' "$*" >&2; }

if [ ! -d "$checkout/.git" ]; then
  log "cloning $FLAKE_REPO"
  git clone ${FLAKE_BRANCH:+--branch "$FLAKE_BRANCH"} -- "$FLAKE_REPO" "$checkout"
else
  log "updating the checkout of $FLAKE_REPO"
  git -C "$checkout" remote set-url origin "$FLAKE_REPO"
  git -C "$checkout" fetch --quiet origin ${FLAKE_BRANCH:+"$FLAKE_BRANCH"}
  git -C "$checkout" reset --quiet --hard FETCH_HEAD
  git -C "$checkout" clean --quiet -fdx
fi

if [ "$UPDATE_INPUTS" = 1 ]; then
  log "updating flake inputs"
  if [ "$COMMIT_LOCK" = 1 ]; then
    (cd "$checkout" && nix flake update --commit-lock-file)
    git -C "$checkout" push --quiet origin "HEAD:${FLAKE_BRANCH:-$(git -C "$checkout" rev-parse --abbrev-ref '@{upstream}' | sed 's|^origin/||')}"
  else
    (cd "$checkout" && nix flake update)
  fi
fi

failed=()
for machine in $MACHINES; do
  out="$WORK_DIR/result-$machine"
  log "building $machine"
  if ! nix build --out-link "$out" "$checkout#nixosConfigurations.\"$machine\".config.system.build.toplevel"; then
    log "building $machine failed"
    failed+=("$machine")
    continue
  fi
  log "pushing $machine"
  if ! nix-lan-cache push --to "$PUSH_TARGET" --key-file "$KEY_FILE" ${COMPRESSION:+--compression "$COMPRESSION"} --root "$machine" "$out"; then
    log "pushing $machine failed"
    failed+=("$machine")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  log "failed: ${failed[*]}"
  exit 1
fi
log "done: $MACHINES"
