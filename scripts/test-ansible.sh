#!/usr/bin/env bash
# The Ansible module (contrib/ansible: rampart.firewall.rampart) against a real kernel:
# ad-hoc ansible runs the module inside a throwaway network namespace, with a temporary
# config directory, and each step's `changed` and the firewall's state after it are
# checked. As root. Usage: scripts/test-ansible.sh [path/to/rampart]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

if [ "$(id -u)" -ne 0 ]; then
  echo "ERROR: run as root (network namespaces and nftables need it)" >&2
  exit 1
fi
bin=${1:-target/debug/rampart}
if [ ! -x "$bin" ]; then
  echo "ERROR: no rampart binary at $bin (build it, or give its path)" >&2
  exit 1
fi
bin=$(realpath "$bin")
if ! command -v ansible >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "ansible is missing: installing ansible-core"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq ansible-core >/dev/null
  else
    echo "ERROR: ansible is missing (install ansible-core)" >&2
    exit 1
  fi
fi
command -v nft >/dev/null 2>&1 || { echo "ERROR: nft is missing (scripts/deps.sh installs it)" >&2; exit 1; }

ns=rpansible$$
tmp=$(mktemp -d /tmp/rampart-ansible.XXXXXX)
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
ip netns add "$ns"
cfg=$tmp/config

# Ansible: this collection only, its JSON on stdout, nothing written outside $tmp.
: >"$tmp/ansible.cfg"
export ANSIBLE_CONFIG=$tmp/ansible.cfg
export ANSIBLE_HOME=$tmp/ansible-home
export ANSIBLE_REMOTE_TEMP=$tmp/ansible-remote
export ANSIBLE_COLLECTIONS_PATH=$repo/contrib/ansible
export ANSIBLE_STDOUT_CALLBACK=json
export ANSIBLE_LOAD_CALLBACK_PLUGINS=1
export ANSIBLE_PYTHON_INTERPRETER=auto_silent
export ANSIBLE_NOCOLOR=1
export ANSIBLE_DEPRECATION_WARNINGS=0
unset RAMPART_CONFIG_DIR SSH_CONNECTION

pass=0
fail=0
ok() {
  pass=$((pass + 1))
  echo "ok: $1"
}
bad() {
  fail=$((fail + 1))
  echo "FAIL: $1" >&2
}

rampart() {
  ip netns exec "$ns" "$bin" --config-dir "$cfg" "$@"
}

# mod [--check] ARGS: run the module once with ARGS (key=value), in the namespace; its
# result for localhost is left in $tmp/result.json.
ssh_env=()
mod() {
  local extra=()
  if [ "$1" = --check ]; then
    extra=(--check)
    shift
  fi
  ip netns exec "$ns" env "${ssh_env[@]}" ansible localhost -c local -i localhost, -m rampart.firewall.rampart \
    -a "binary=$bin config_dir=$cfg $*" "${extra[@]}" >"$tmp/out.json" 2>"$tmp/err" || true
  python3 - "$tmp/out.json" "$tmp/err" >"$tmp/result.json" <<'EOF'
import json, sys
try:
    out = json.load(open(sys.argv[1]))
    result = out["plays"][0]["tasks"][0]["hosts"]["localhost"]
except Exception as e:
    result = {"failed": True, "msg": "no result from ansible (%s): %s %s" % (
        e, open(sys.argv[1]).read()[-2000:], open(sys.argv[2]).read()[-2000:])}
json.dump(result, sys.stdout)
EOF
}

# result FIELD: a field of the last result (JSON for lists and objects).
result() {
  python3 -c '
import json, sys
v = json.load(open(sys.argv[1])).get(sys.argv[2])
print(json.dumps(v) if isinstance(v, (list, dict)) else ("true" if v is True else "false" if v in (False, None) else v))
' "$tmp/result.json" "$1"
}

# expect NAME true|false [--check] ARGS: the module succeeds and reports changed as said.
expect() {
  local name=$1 want=$2
  shift 2
  mod "$@"
  local got
  got=$(result changed)
  if [ "$(result failed)" = true ]; then
    bad "$name: the module failed: $(result msg) (commands: $(result commands))"
  elif [ "$got" = "$want" ]; then
    ok "$name (changed=$got)"
  else
    bad "$name: changed=$got, expected $want; commands: $(result commands); stdout: $(result stdout)"
  fi
}

# expect_failure NAME TEXT ARGS: the module fails, with TEXT in its message.
expect_failure() {
  local name=$1 text=$2
  shift 2
  mod "$@"
  if [ "$(result failed)" != true ]; then
    bad "$name: the module did not fail (changed=$(result changed), stdout: $(result stdout))"
  elif [[ "$(result msg)" != *"$text"* ]]; then
    bad "$name: the module failed, but its message has no '$text': $(result msg)"
  else
    ok "$name (failed: $(result msg))"
  fi
}

# status_is NAME EXPR: EXPR (Python, with s = `rampart status --json`, cmds = its rules'
# commands) is true.
status_is() {
  local name=$1 expr=$2
  if ! rampart status --json >"$tmp/status.json" 2>"$tmp/status.err"; then
    bad "$name: 'rampart status --json' failed: $(cat "$tmp/status.err")"
    return
  fi
  if python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
cmds = [r["command"] for r in s["rules"]]
sys.exit(0 if eval(sys.argv[2]) else 1)
' "$tmp/status.json" "$expr"; then
    ok "$name"
  else
    bad "$name: not true of 'rampart status --json': $expr; it says: $(cat "$tmp/status.json")"
  fi
}

echo "rampart: $bin; namespace $ns; config $cfg"

# The firewall.
expect "state=enabled enables" true state=enabled
expect "state=enabled again changes nothing" false state=enabled
status_is "the firewall is active and enabled" 's["active"] and s["enabled"]'

# A rule with a comment.
ssh="rule=allow port=22 proto=tcp from_ip=198.18.0.0/24 comment='ssh from lab'"
ssh_cmd="allow from 198.18.0.0/24 to any port 22 proto tcp comment 'ssh from lab'"
expect "a rule is added" true $ssh
expect "the same rule again changes nothing" false $ssh
status_is "the rule is in the policy" "cmds == [\"$ssh_cmd\"]"
expect "check mode of the same rule changes nothing" false --check $ssh
expect "check mode of a new rule reports a change" true --check rule=allow port=443 proto=tcp from_ip=198.18.1.0/24
status_is "check mode added nothing" "cmds == [\"$ssh_cmd\"]"
expect "another comment updates the rule" true rule=allow port=22 proto=tcp from_ip=198.18.0.0/24 "comment='ssh, lab 2'"
expect "the comment again changes nothing" false rule=allow port=22 proto=tcp from_ip=198.18.0.0/24 "comment='ssh, lab 2'"
expect "the first comment back" true $ssh

# A limit rule with rampart's limit words (no address: IPv4 and IPv6).
web="rule=limit port=80 proto=tcp limit='rate 20/30s per source'"
expect "a limit rule is added" true $web
expect "the same limit rule again changes nothing" false $web
status_is "the limit rule is there for both families" \
  'sum(1 for r in s["rules"] if r["rule"]["action"] == "limit" and r["rule"].get("to", {}).get("ports") == "80" and r["rule"].get("limit", {}).get("rate")) == 2'

# A route rule.
route="rule=allow direction=routed interface=veth0 interface_out=veth1 to_ip=198.18.2.0/24 port=80 proto=tcp"
expect "a route rule is added" true $route
expect "the same route rule again changes nothing" false $route
status_is "the route rule is in the policy" \
  'any(c.startswith("route allow in on veth0 out on veth1 to 198.18.2.0/24 port 80") for c in cmds)'
expect "the route rule is deleted" true state=absent $route
expect "the route rule deleted again changes nothing" false state=absent $route
expect_failure "interface_out without direction=routed is refused" "direction=routed" rule=allow interface_out=veth1 port=80

# Deleting.
expect "check mode of absent reports a change" true --check state=absent $ssh
status_is "check mode deleted nothing" "\"$ssh_cmd\" in cmds"
expect "state=absent deletes the rule" true state=absent $ssh
status_is "the rule is gone" "\"$ssh_cmd\" not in cmds and len(cmds) == 2"
expect "state=absent again changes nothing" false state=absent $ssh

# Defaults.
expect "default deny outgoing" true default=deny direction=outgoing
expect "default deny outgoing again changes nothing" false default=deny direction=outgoing
expect "check mode of default allow outgoing reports a change" true --check default=allow direction=outgoing
status_is "the outgoing default is deny" 's["defaults"]["outgoing"] == "deny"'

# Errors are rampart's.
expect_failure "a bad port fails with rampart's message" "port" rule=allow port=99999 proto=tcp
expect_failure "a comment with a quote fails with rampart's message" "single quote" rule=allow port=25 "comment=\"it's\""

# Off.
expect "check mode of state=disabled reports a change" true --check state=disabled
status_is "check mode left it active" 's["active"]'
expect "state=disabled disables" true state=disabled
expect "state=disabled again changes nothing" false state=disabled
status_is "the firewall is inactive" 'not s["active"] and not s["enabled"]'
expect "a rule added while disabled is a change" true rule=deny from_ip=198.18.7.7
expect "and again is not" false rule=deny from_ip=198.18.7.7

# The whole policy from a file (rampart apply).
if ip netns exec "$ns" "$bin" apply --help >/dev/null 2>&1; then
  src=$tmp/source
  make_policy() {
    ip netns exec "$ns" "$bin" --config-dir "$src" "$@" >/dev/null
  }
  make_policy allow 443/tcp
  make_policy deny from 198.18.9.0/24
  make_policy default reject incoming
  # Without `enabled`, apply leaves the firewall on or off as it is.
  grep -v '^enabled' "$src/policy.toml" >"$tmp/a.toml"
  make_policy allow 8080/tcp comment 'proxy'
  grep -v '^enabled' "$src/policy.toml" >"$tmp/b.toml"
  a_cmds='["allow 443/tcp", "deny from 198.18.9.0/24", "allow 443/tcp"]'
  expect "state=enabled before the policy file" true state=enabled
  expect "a policy file is applied" true policy_file="$tmp/a.toml"
  status_is "the policy is the file's" "cmds == $a_cmds and s[\"defaults\"][\"incoming\"] == \"reject\" and s[\"active\"]"
  expect "the same policy file again changes nothing" false policy_file="$tmp/a.toml"
  expect "check mode of another policy file reports a change" true --check policy_file="$tmp/b.toml"
  if [[ "$(result diff)" == *8080* ]]; then
    ok "its difference names the new rule"
  else
    bad "the difference of check mode does not name the new rule: $(result diff)"
  fi
  status_is "check mode applied nothing" "cmds == $a_cmds"
  expect_failure "a policy file that does not exist fails" "$tmp/missing.toml" policy_file="$tmp/missing.toml"
else
  bad "this rampart has no 'apply' command (the policy_file mode needs it)"
fi

# Over SSH, rampart's lockout guard refuses what would lock the session out, unless
# force=true. The session: SSH_CONNECTION, to an address of an interface in the namespace.
rampart --force disable >/dev/null
ip -n "$ns" link add rpv0 type veth peer name rpv1
ip -n "$ns" addr add 198.18.0.1/24 dev rpv0
ip -n "$ns" link set rpv0 up
ssh_env=(SSH_CONNECTION="198.18.0.50 50000 198.18.0.1 22")
expect_failure "over SSH, an enable that would lock the session out is refused" "lock out" state=enabled
status_is "the refused enable left the firewall inactive" 'not s["active"] and not s["enabled"]'
expect "check mode warns of the lockout" true --check state=enabled
if [[ "$(result warnings)" == *"lock out"* ]]; then
  ok "the warning names the lockout"
else
  bad "check mode of the locking enable gave no lockout warning: $(result warnings)"
fi
expect "force=true enables all the same" true state=enabled force=true
ssh_env=()

echo "ansible: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
