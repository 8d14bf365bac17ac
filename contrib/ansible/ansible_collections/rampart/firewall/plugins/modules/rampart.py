#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) rampart contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: rampart
short_description: Manage a host firewall with rampart
version_added: 0.1.0
description:
  - Manage the rampart host firewall (UFW's command language compiled to one nftables
    table). Enable, disable or reload it, set default policies, add and delete rules,
    or make the whole policy exactly a policy file's.
  - Modelled on C(community.general.ufw); rule options build a rule in rampart's full
    syntax, C([route] ACTION [in|out] [on IFACE] [out on IFACE2] [log] [proto P] from FROM
    [port FP] to TO [port TP] [LIMIT WORDS] [comment C]).
  - Whether a task changed anything is read from rampart itself, so running the same
    task again reports no change. In check mode nothing is changed; rule commands run
    with C(--dry-run); enable, disable and defaults are decided from C(status --json)
    (and a change is run with C(--dry-run), so that its errors and the lockout guard's
    warning show); a policy file runs C(apply --check).
author:
  - rampart contributors
notes:
  - See C(rampart --help) and rampart's C(docs/GRAMMAR.md) for the rule language.
  - Inside an SSH session (as when Ansible connects over SSH), rampart refuses a change
    that would refuse the next SSH connection from the same client; the task then fails
    with rampart's message, which names the rule to add first. I(force=true) overrides
    this guard.
  - Enabling inside an SSH session asks whether to go on; the module answers yes (the
    lockout guard still applies unless I(force=true)).
requirements:
  - rampart on the managed host
attributes:
  check_mode:
    support: full
  diff_mode:
    support: partial
    details: With I(policy_file), the difference is shown as the rampart commands that make it.
options:
  state:
    description:
      - C(present) adds the rule described by the other options (or updates its action,
        log option or comment in place); C(absent) deletes it.
      - C(enabled) loads the firewall and enables it at boot; C(disabled) unloads it and
        disables it at boot; C(reloaded) loads the policy again (reported as a change
        whenever the firewall is enabled, since a reload also re-reads custom snippets
        and application profiles).
      - Defaults to C(present) when I(rule), I(default) or I(policy_file) is given.
      - I(default) may be combined with C(present), C(enabled), C(disabled) and
        C(reloaded); it is set before the firewall is enabled, disabled or reloaded.
    type: str
    choices: [ present, absent, enabled, disabled, reloaded ]
  rule:
    description:
      - The rule's action. Required with I(state=present) or I(state=absent) unless
        only I(default) is set.
    type: str
    choices: [ allow, deny, reject, limit ]
  port:
    description:
      - The destination port, port range (C(8000:8100)), list (C(80,443)) or service
        name.
    type: str
    aliases: [ to_port ]
  proto:
    description:
      - The protocol. Without it, a port means TCP and UDP.
    type: str
    aliases: [ protocol ]
    choices: [ any, tcp, udp, ah, esp, gre, vrrp, ipv6, igmp ]
  from_ip:
    description:
      - The source address or network (IPv4 or IPv6), or C(any).
    type: str
    default: any
    aliases: [ from, src ]
  from_port:
    description:
      - The source port.
    type: str
  to_ip:
    description:
      - The destination address or network (IPv4 or IPv6), or C(any).
    type: str
    default: any
    aliases: [ to, dest ]
  interface:
    description:
      - The interface of the rule (C(in on IFACE), or C(out on IFACE) with
        I(direction=out)); for route rules, the incoming interface. C(NAME+) matches
        every interface whose name starts with NAME.
      - Without I(direction), a rule with an interface is an incoming one.
    type: str
    aliases: [ if, interface_in ]
  interface_out:
    description:
      - The outgoing interface of a route rule (I(direction=routed)).
    type: str
  direction:
    description:
      - For a rule, C(in), C(out) or C(routed) (a C(route) rule, for forwarded
        traffic); C(incoming) and C(outgoing) are taken as C(in) and C(out).
      - For I(default), C(incoming), C(outgoing) or C(routed) (C(in) and C(out) are
        taken as C(incoming) and C(outgoing)); without it, C(incoming).
    type: str
    choices: [ in, incoming, out, outgoing, routed ]
  comment:
    description:
      - The rule's comment (rampart refuses single quotes in it). A rule that exists
        with another comment is updated in place; with I(state=absent), only the rule
        with this comment is deleted.
      - Without it, the rule is added without a comment (an existing rule's comment is
        removed), and I(state=absent) deletes the rule whatever its comment.
    type: str
  log:
    description:
      - Log the packets that start a connection matched by the rule (C(log)).
    type: bool
    default: false
  limit:
    description:
      - rampart's limit words appended to a C(limit) rule, as one string, for example
        C(rate 20/30s per source) or C(conn 1 per any over reject).
      - Only with I(rule=limit). Without it, a limit rule is UFW's (5 in any 30 s per
        source).
    type: str
  default:
    description:
      - Set the default policy of I(direction) to this.
    type: str
    choices: [ allow, deny, reject ]
    aliases: [ policy ]
  policy_file:
    description:
      - A policy file on the managed host (TOML, the format of the config directory's
        C(policy.toml)); the module runs C(rampart apply) so that the policy becomes
        exactly the file's (when the file has no C(enabled) key, the firewall stays
        enabled or disabled as it is).
      - Runs C(rampart apply --check) first; the policy is applied only when it differs.
      - Mutually exclusive with I(rule) and I(default).
    type: path
  force:
    description:
      - Pass C(--force) to rampart, which also turns off its SSH lockout guard.
    type: bool
    default: false
  binary:
    description:
      - The rampart program, as a name looked up in C(PATH) or as a path.
    type: str
    default: rampart
  config_dir:
    description:
      - rampart's configuration directory (C(--config-dir)); without it, rampart's own
        default (C(RAMPART_CONFIG_DIR) or C(/etc/rampart)).
    type: path
'''

EXAMPLES = r'''
- name: Allow SSH from the management network, then enable the firewall
  rampart.firewall.rampart:
    rule: allow
    port: "22"
    proto: tcp
    from_ip: 198.18.0.0/24
    comment: ssh from management

- name: Enable the firewall
  rampart.firewall.rampart:
    state: enabled

- name: Deny outgoing traffic by default
  rampart.firewall.rampart:
    default: deny
    direction: outgoing

- name: Limit new HTTP connections per source address
  rampart.firewall.rampart:
    rule: limit
    port: "80"
    proto: tcp
    limit: rate 20/30s per source

- name: One proxy connection per client at a time, refusing the rest
  rampart.firewall.rampart:
    rule: limit
    port: "3128"
    proto: tcp
    limit: conn 1 per any over reject

- name: Let forwarded web traffic from eth0 to eth1 through
  rampart.firewall.rampart:
    rule: allow
    direction: routed
    interface: eth0
    interface_out: eth1
    to_ip: 198.18.2.0/24
    port: "80"
    proto: tcp

- name: Log and allow DNS replies from an IPv6 resolver on eth0
  rampart.firewall.rampart:
    rule: allow
    interface: eth0
    log: true
    proto: udp
    from_ip: 2001:db8::53
    from_port: "53"

- name: Remove a rule
  rampart.firewall.rampart:
    state: absent
    rule: allow
    port: "23"
    proto: tcp

- name: Make the whole policy a file's
  block:
    - name: Copy the policy
      ansible.builtin.copy:
        src: policy.toml
        dest: /etc/rampart/site-policy.toml
        mode: "0644"
    - name: Apply it
      rampart.firewall.rampart:
        policy_file: /etc/rampart/site-policy.toml

- name: Reload (for example from a handler)
  rampart.firewall.rampart:
    state: reloaded
'''

RETURN = r'''
commands:
  description: The rampart command lines run, in order (with C(--dry-run) in check mode).
  returned: always
  type: list
  elements: str
  sample: ["rampart allow proto tcp from 198.18.0.0/24 to any port 22 comment 'ssh from management'"]
stdout:
  description: What the commands printed (in check mode, with the planned nft ruleset).
  returned: always
  type: str
  sample: "Rule added\n"
messages:
  description: rampart's messages about rules (C(Rule added), C(Skipping adding existing rule) ...), one a line, as printed.
  returned: when a rule was added or deleted
  type: list
  elements: str
  sample: ["Rule added", "Rule added (v6)"]
rule:
  description: The rule's words, as passed to rampart (after C(delete) with I(state=absent)).
  returned: when a rule was added or deleted
  type: list
  elements: str
  sample: ["allow", "proto", "tcp", "from", "198.18.0.0/24", "to", "any", "port", "22"]
status:
  description: C(rampart status --json) read before the change, when the module needed it.
  returned: when state is enabled, disabled or reloaded, or default is set
  type: dict
'''

import json
import os
import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves import shlex_quote

# rampart's messages after a rule command (a " (v6)" suffix is for the IPv6 copy).
CHANGED = frozenset([
    'Rule added',
    'Rule inserted',
    'Rule updated',
    'Rule deleted',
    'Rules updated',
])
UNCHANGED = frozenset([
    'Skipping adding existing rule',
    'Skipping inserting existing rule',
    'Could not delete non-existent rule',
])

RULE_DIRECTIONS = {'in': 'in', 'incoming': 'in', 'out': 'out', 'outgoing': 'out', 'routed': 'routed'}
DEFAULT_DIRECTIONS = {'in': 'incoming', 'incoming': 'incoming', 'out': 'outgoing',
                      'outgoing': 'outgoing', 'routed': 'routed'}


def message_of(line):
    line = line.strip()
    if line.endswith(' (v6)'):
        line = line[:-len(' (v6)')]
    return line


class Rampart(object):
    def __init__(self, module):
        self.module = module
        p = module.params
        binary = p['binary']
        if os.sep in binary:
            if not os.access(binary, os.X_OK):
                module.fail_json(msg='rampart binary %s is not an executable file' % binary)
            self.binary = binary
        else:
            self.binary = module.get_bin_path(binary, required=True)
        self.globals = []
        if p['config_dir']:
            self.globals += ['--config-dir', p['config_dir']]
        if p['force']:
            self.globals.append('--force')
        self.commands = []
        self.stdout = []
        self.changed = False
        # Whether a command that changed the firewall has run (for a failure's changed).
        self.done = False
        self.result = {}

    def run(self, args, dry_run=False, record=True, data=None, ok_rcs=(0,)):
        argv = [self.binary] + self.globals + (['--dry-run'] if dry_run else []) + list(args)
        if record:
            self.commands.append(' '.join(shlex_quote(a) for a in argv))
        rc, out, err = self.module.run_command(argv, data=data, binary_data=True,
                                               environ_update={'LC_ALL': 'C'})
        for line in err.splitlines():
            if line.startswith('WARN: '):
                self.module.warn(line[len('WARN: '):])
        if rc not in ok_rcs:
            self.fail(rc, out, err)
        if record:
            self.stdout.append(out)
        return rc, out, err

    def fail(self, rc, out, err, msg=None):
        if msg is None:
            errors = [l for l in err.splitlines() if l.startswith('ERROR: ')]
            if errors:
                msg = errors[0]
            else:
                msg = err.strip() or out.strip() or 'rampart exited with status %d' % rc
        # changed: what an earlier command of the same task did (a default set before a
        # rule that fails).
        self.module.fail_json(msg=msg, rc=rc, stdout=''.join(self.stdout) + out, stderr=err,
                              commands=self.commands, changed=self.done)

    def status(self):
        rc, out, err = self.run(['status', '--json'], record=False)
        try:
            status = json.loads(out)
        except ValueError as e:
            self.fail(rc, out, err, msg='rampart status --json printed no JSON: %s' % e)
        self.result['status'] = status
        return status

    def exit(self, **extra):
        self.result.update(extra)
        self.module.exit_json(changed=self.changed, commands=self.commands,
                              stdout=''.join(self.stdout), **self.result)

    # --- actions -------------------------------------------------------------

    def default(self):
        p = self.module.params
        direction = DEFAULT_DIRECTIONS[p['direction'] or 'incoming']
        current = self.status().get('defaults', {}).get(direction)
        if current == p['default']:
            return
        self.changed = True
        # In check mode, the dry run still reports errors and the lockout guard's warning.
        self.run(['default', p['default'], direction], dry_run=self.module.check_mode)
        self.done = not self.module.check_mode

    def firewall_state(self, state):
        status = self.status()
        check = self.module.check_mode
        if state == 'enabled':
            if status.get('enabled') and status.get('active') and status.get('in_sync'):
                return
            self.changed = True
            # Inside an SSH session rampart asks before enabling: answer yes (the lockout
            # guard still refuses a lockout unless force is set; a dry run warns of it).
            self.run(['enable'], dry_run=check, data=b'y\n')
            self.done = not check
        elif state == 'disabled':
            if not status.get('enabled') and not status.get('active'):
                return
            self.changed = True
            if not check:
                self.run(['disable'])
                self.done = True
        elif state == 'reloaded':
            if not status.get('enabled'):
                return
            self.changed = True
            self.run(['reload'], dry_run=check)

    def rule_words(self):
        """The rule's words after the action, and whether it is a route rule."""
        p = self.module.params
        direction = RULE_DIRECTIONS.get(p['direction']) if p['direction'] else None
        route = direction == 'routed'
        words = []
        if route:
            if p['interface']:
                words += ['in', 'on', p['interface']]
            if p['interface_out']:
                words += ['out', 'on', p['interface_out']]
        elif direction or p['interface']:
            words.append(direction or 'in')
            if p['interface']:
                words += ['on', p['interface']]
        if p['log']:
            words.append('log')
        if p['proto']:
            words += ['proto', p['proto']]
        words += ['from', p['from_ip'] or 'any']
        if p['from_port']:
            words += ['port', p['from_port']]
        words += ['to', p['to_ip'] or 'any']
        if p['port']:
            words += ['port', p['port']]
        if p['limit']:
            try:
                words += shlex.split(p['limit'])
            except ValueError as e:
                self.module.fail_json(msg='limit: %s' % e)
        if p['comment'] is not None:
            words += ['comment', p['comment']]
        return words, route

    def rule(self, state):
        p = self.module.params
        words, route = self.rule_words()
        if state == 'present':
            args = (['route'] if route else []) + [p['rule']] + words
        else:
            args = (['route', 'delete'] if route else ['delete']) + [p['rule']] + words
        rc, out, err = self.run(args, dry_run=self.module.check_mode)
        messages = [l.strip() for l in out.splitlines()
                    if message_of(l) in CHANGED or message_of(l) in UNCHANGED]
        self.result['messages'] = messages
        self.result['rule'] = (['route'] if route else []) + [p['rule']] + words
        if any(message_of(m) in CHANGED for m in messages):
            self.changed = True
        elif not messages:
            # Not one of the known messages: say changed rather than hide a change.
            self.module.warn('rampart printed none of the known rule messages; reporting a change')
            self.changed = True

    def policy_file(self):
        path = self.module.params['policy_file']
        # Exit 0: the policy is the file's; 1: it differs (the difference is printed).
        rc, out, err = self.run(['apply', '--check', path], ok_rcs=(0, 1))
        if rc == 0:
            return
        self.changed = True
        difference = (out.strip() or err.strip()) + '\n'
        self.result['diff'] = {'prepared': difference}
        if not self.module.check_mode:
            # stdout: what apply printed (the same commands as the check's difference).
            self.stdout = []
            self.run(['apply', path])
            self.done = True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', choices=['present', 'absent', 'enabled', 'disabled', 'reloaded']),
            rule=dict(type='str', choices=['allow', 'deny', 'reject', 'limit']),
            port=dict(type='str', aliases=['to_port']),
            proto=dict(type='str', aliases=['protocol'],
                       choices=['any', 'tcp', 'udp', 'ah', 'esp', 'gre', 'vrrp', 'ipv6', 'igmp']),
            from_ip=dict(type='str', default='any', aliases=['from', 'src']),
            from_port=dict(type='str'),
            to_ip=dict(type='str', default='any', aliases=['to', 'dest']),
            interface=dict(type='str', aliases=['if', 'interface_in']),
            interface_out=dict(type='str'),
            direction=dict(type='str', choices=['in', 'incoming', 'out', 'outgoing', 'routed']),
            comment=dict(type='str'),
            log=dict(type='bool', default=False),
            limit=dict(type='str'),
            default=dict(type='str', choices=['allow', 'deny', 'reject'], aliases=['policy']),
            policy_file=dict(type='path'),
            force=dict(type='bool', default=False),
            binary=dict(type='str', default='rampart'),
            config_dir=dict(type='path'),
        ),
        mutually_exclusive=[
            ['policy_file', 'rule'],
            ['policy_file', 'default'],
        ],
        supports_check_mode=True,
    )
    p = module.params
    state = p['state']
    if state is None:
        if not (p['rule'] or p['default'] or p['policy_file']):
            module.fail_json(msg='nothing to do: give state, rule, default or policy_file')
        state = 'present'
    if p['policy_file'] and state != 'present':
        module.fail_json(msg='policy_file makes the whole policy the file\'s: it takes no state=%s' % state)
    if state in ('present', 'absent') and not (p['rule'] or p['default'] or p['policy_file']):
        module.fail_json(msg='state=%s needs rule (or default, or policy_file)' % state)
    if state == 'absent' and p['default']:
        module.fail_json(msg='default cannot be absent: set it to allow, deny or reject')
    if state in ('enabled', 'disabled', 'reloaded') and p['rule']:
        module.fail_json(msg='rule is added or deleted with state=present or state=absent, not state=%s' % state)
    if p['rule']:
        if p['interface_out'] and p['direction'] != 'routed':
            module.fail_json(msg='interface_out is for route rules (direction=routed); '
                                 'for an outgoing rule use interface with direction=out')

    fw = Rampart(module)
    if p['policy_file']:
        fw.policy_file()
    else:
        if p['default']:
            fw.default()
        if state in ('enabled', 'disabled', 'reloaded'):
            fw.firewall_state(state)
        elif p['rule']:
            fw.rule(state)
    fw.exit()


if __name__ == '__main__':
    main()
