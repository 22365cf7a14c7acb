import { AGENT_NODE_FLAGS } from '../../agent/node-flags.js';

/**
 * The text of every file the agent's .deb adds besides the agent itself: control data,
 * maintainer scripts, the wrapper, units, and the documentation Debian policy asks for. Pure
 * functions of their inputs, so the package test can read them without building anything.
 *
 * Layout on the device (Filesystem Hierarchy Standard, Debian policy 9.1):
 *   /usr/lib/ota-agent/            the agent, its npm dependencies, node/bin/node
 *   /usr/bin/ota-agent             the wrapper (runs the bundled node with the agent's flags)
 *   /lib/systemd/system/           ota-agent.service, ota-agent.path
 *   /usr/lib/sysusers.d/           the ota-agent system user
 *   /etc/default/ota-agent         conffile: node flags and extra options, kept across upgrades
 *   /etc/ota-agent/config.json     NOT in the package: the device's own config (token), which
 *                                  dpkg never touches; purge removes it
 *   /var/lib/ota-agent/            the state: kept by upgrades and by purge unless asked
 */

export const LIB_DIR = '/usr/lib/ota-agent';
export const NODE_PATH = `${LIB_DIR}/node/bin/node`;
export const WRAPPER_PATH = '/usr/bin/ota-agent';
export const OWN_CONFIG_PATH = `${LIB_DIR}/libexec/own-config`;
/** Debian 12 and 11 (usrmerge not required yet) keep packaged units here; lintian checks it. */
export const UNIT_DIR = '/lib/systemd/system';
export const DEFAULTS_PATH = '/etc/default/ota-agent';
export const CONFIG_PATH = '/etc/ota-agent/config.json';
export const STATE_DIR = '/var/lib/ota-agent';
export const DOC_DIR = '/usr/share/doc/ota-agent';
export const PACKAGE = 'ota-agent';

/**
 * Shared-library dependencies of the bundled node and onnxruntime binaries, from their ELF
 * version needs (objdump -T): glibc 2.28 (GLIBC_2.28), libstdc++ from GCC 6 (GLIBCXX_3.4.22),
 * libgcc_s (GCC_4.3.0). systemd 247: the unit relies on systemd-notify waiting for the manager
 * (246, systemd/ota-agent.service) and on ProtectProc= (247; ignored before). init-system-helpers: deb-systemd-helper in the maintainer scripts.
 * The package test compares these with the version needs of the binaries it ships (objdump -T).
 */
export const DEPENDS = [
  'libc6 (>= 2.28)',
  'libgcc-s1 (>= 4.3)',
  'libstdc++6 (>= 6)',
  'systemd (>= 247)',
  'init-system-helpers (>= 1.58)',
];

export interface ControlFields {
  version: string;
  arch: string;
  installedSizeKiB: number;
  maintainer: string;
}

/** DEBIAN/control (Debian policy 5.3, 5.6). */
export function controlFile(f: ControlFields): string {
  return [
    `Package: ${PACKAGE}`,
    `Version: ${f.version}`,
    `Architecture: ${f.arch}`,
    `Maintainer: ${f.maintainer}`,
    `Installed-Size: ${f.installedSizeKiB}`,
    `Depends: ${DEPENDS.join(', ')}`,
    'Section: admin',
    'Priority: optional',
    'Homepage: https://github.com/ota-models/ota-models',
    'Description: over-the-air ML model agent with an on-device health probe',
    ' ota-agent is the device side of ota-models. It follows its desired state',
    ' over MQTT, downloads the assigned ONNX model, verifies the Ed25519-signed',
    ' manifest and the bytes, swaps the model in atomically, runs an inference',
    ' health probe with onnxruntime, rolls back by itself when the probe fails,',
    ' and reports its state to the coordinator.',
    ' .',
    ' The package bundles the Node.js runtime and onnxruntime it runs on. Copy the',
    ` device's config to ${CONFIG_PATH} and the service starts.`,
    '',
  ].join('\n');
}

/** DEBIAN/conffiles (policy 10.7.3): dpkg keeps local edits across upgrades. */
export function conffilesFile(): string {
  return `${DEFAULTS_PATH}\n`;
}

/** /etc/default/ota-agent: everything commented out; the wrapper reads it. */
export function defaultsFile(): string {
  return `# Settings for ota-agent, read by ${WRAPPER_PATH} (and so by the ota-agent service).
# A conffile: your changes are kept when the package is upgraded. After a change:
#   sudo systemctl restart ota-agent
#
# Node.js flags for the agent. The default keeps an idle agent small (agent/node-flags.ts:
# no optimising compiler, a 1 MB young generation).
#OTA_AGENT_NODE_FLAGS="${AGENT_NODE_FLAGS.join(' ')}"
#
# The agent's device config (written by \`otactl device add ID --agent-config FILE\`) is
# ${CONFIG_PATH}, mode 0640 root:ota-agent; it is not part of the package.
`;
}

/** /usr/bin/ota-agent. */
export function wrapperScript(): string {
  return `#!/bin/sh
# ota-agent: the ota-models device agent, on the Node.js runtime bundled in its package.
# Settings: ${DEFAULTS_PATH}. Help: ota-agent --help, man ota-agent.
OTA_AGENT_NODE_FLAGS="${AGENT_NODE_FLAGS.join(' ')}"
if [ -r ${DEFAULTS_PATH} ]; then
  . ${DEFAULTS_PATH}
fi
# The flags are split into words on purpose.
# shellcheck disable=SC2086
exec ${NODE_PATH} $OTA_AGENT_NODE_FLAGS ${LIB_DIR}/dist/agent/main.js "$@"
`;
}

/**
 * Run as root before each start (ExecStartPre=+): \`sudo cp cam-01.agent.json ${CONFIG_PATH}\`
 * leaves a root-only file (otactl writes it 0600), which the agent's user could not read; so do
 * a token file or CA certificate copied next to it. Each regular file directly in /etc/ota-agent
 * becomes 0640 root:ota-agent: root writes, the ota-agent group reads, others nothing.
 */
export function ownConfigScript(): string {
  return `#!/bin/sh
# Makes the files in /etc/ota-agent (config.json, a token file, a CA certificate) readable by the
# ota-agent group and writable by root only: 0640 root:ota-agent.
# Run by systemd as root before the agent starts (ExecStartPre=+ in ota-agent.service).
set -e
for file in /etc/ota-agent/*; do
  # Symlinks are left alone: their targets are the administrator's business.
  if [ -f "$file" ] && [ ! -L "$file" ]; then
    chown root:ota-agent "$file"
    chmod 0640 "$file"
  fi
done
`;
}

/** /usr/lib/sysusers.d/ota-agent.conf (sysusers.d(5)): the system user, its group, no login. */
export function sysusersFile(): string {
  return `# The ota-models device agent's system user (created by the package's postinst, and by
# systemd-sysusers at boot if it is ever missing). Its home is the state directory.
u ota-agent - "ota-models device agent" ${STATE_DIR} /usr/sbin/nologin
`;
}

/**
 * The packaged unit: systemd/ota-agent.service (the one install-agent.sh installs, with its
 * sandbox and comments) with the package's paths, a condition on the config, and the step that
 * makes a copied config readable. Each rewrite must match exactly once, so an edit of the unit
 * that breaks one stops the build instead of shipping a unit that runs the wrong thing.
 */
export function packagedUnit(source: string): string {
  const header = `# ota-agent: the OTA model agent of ota-models, as a hardened systemd service.
#
# Installed by the ota-agent package. Local changes belong in a drop-in
# (\`systemctl edit ota-agent\`), not in this file, so that upgrades do not undo them. The agent
# starts once ${CONFIG_PATH} exists (ota-agent.path starts it when the file appears).
#
# Check the sandbox: systemd-analyze security ota-agent.service (target <= 2.0).
`;
  const rewrites: [RegExp, string, string][] = [
    [/^# ota-agent: the OTA model agent[\s\S]*?\n\n/m, `${header}\n`, 'the header comment'],
    [
      /^Documentation=.*$/m,
      `Documentation=man:ota-agent(1) file:${DOC_DIR}/README.md man:systemd.exec(5)\n` +
        '# No config, no start (instead of failing every RestartSec= until one is copied in).\n' +
        `ConditionPathExists=${CONFIG_PATH}`,
      'Documentation=',
    ],
    [
      /^WantedBy=multi-user\.target$/m,
      '# Disabling the agent disables the path unit too (else a config write would start it again).\nWantedBy=multi-user.target\nAlso=ota-agent.path',
      'WantedBy=',
    ],
    [
      /^ExecStart=.*$/m,
      '# As root (+): make a config copied in with `sudo cp` readable by the agent, 0640 root:ota-agent.\n' +
        `ExecStartPre=+${OWN_CONFIG_PATH}\n` +
        `ExecStart=${WRAPPER_PATH} --config ${CONFIG_PATH}`,
      'ExecStart=',
    ],
  ];
  let unit = source;
  for (const [pattern, replacement, what] of rewrites) {
    const matches = unit.match(new RegExp(pattern.source, `${pattern.flags}g`))?.length ?? 0;
    if (matches !== 1) {
      throw new Error(
        `systemd/ota-agent.service: ${what} matched ${matches} times, expected once; update packagedUnit() in scripts/package/deb-files.ts with the unit`,
      );
    }
    unit = unit.replace(pattern, replacement);
  }
  // The comments' other mentions of the script: the package does that work here.
  return unit
    .replace(/and install-agent\.sh refuses systemd < 246\./, 'and the package depends on systemd >= 247.')
    .replace(/install-agent\.sh/g, "the package's postinst");
}

/** ota-agent.path: starts the agent when its config is copied in (after install, or later). */
export function pathUnit(): string {
  return `# Starts ota-agent.service when ${CONFIG_PATH} is written (closed after writing, or
# moved into place): "sudo cp cam-01.agent.json ${CONFIG_PATH}" is the last install step.
# A change to the config while the agent runs needs: sudo systemctl restart ota-agent
[Unit]
Description=Start ota-agent when its config is installed
Documentation=man:ota-agent(1)

[Path]
PathChanged=${CONFIG_PATH}
Unit=ota-agent.service

[Install]
WantedBy=paths.target
`;
}

const UNITS = ['ota-agent.service', 'ota-agent.path'];

/**
 * postinst (policy 6.5): what scripts/install-agent.sh does. DPKG_ROOT is set when dpkg installs
 * into another root without chroot (\`dpkg --root DIR --force-script-chrootless\`: image builds,
 * the package test); every path and tool below honours it, and nothing is started then.
 */
export function postinstScript(): string {
  return `#!/bin/sh
# postinst of ota-agent: the system user, the config and state directories, the units.
set -e

case "$1" in
configure | abort-upgrade | abort-deconfigure | abort-remove) ;;
*)
  echo "ota-agent postinst: unknown action '$1'" >&2
  exit 1
  ;;
esac

root=\${DPKG_ROOT:-}

# The system user and group ota-agent (/usr/lib/sysusers.d/ota-agent.conf). Kept on purge:
# files it owned may remain.
systemd-sysusers \${root:+--root="$root"} ota-agent.conf
if [ -n "$root" ]; then
  uid=$(awk -F: '$1 == "ota-agent" { print $3 }' "$root/etc/passwd")
  gid=$(awk -F: '$1 == "ota-agent" { print $3 }' "$root/etc/group")
else
  uid=$(getent passwd ota-agent | cut -d: -f3)
  gid=$(getent group ota-agent | cut -d: -f3)
fi
if [ -z "$uid" ] || [ -z "$gid" ]; then
  echo "ota-agent postinst: systemd-sysusers did not create the user ota-agent (see above)" >&2
  exit 1
fi

# /etc/ota-agent: the config holds the device token. root writes, the ota-agent group reads,
# others nothing (the same as own-config does before each start).
mkdir -p "$root/etc/ota-agent"
chown "0:$gid" "$root/etc/ota-agent"
chmod 0750 "$root/etc/ota-agent"
for file in "$root/etc/ota-agent"/*; do
  if [ -f "$file" ] && [ ! -L "$file" ]; then
    chown "0:$gid" "$file"
    chmod 0640 "$file"
  fi
done

# A device installed before with scripts/install-agent.sh: its unit in /etc/systemd/system
# would override the package's and keep running the old agent from /opt/ota-agent, and its
# wrapper in /usr/local/bin comes first in PATH. Both are set aside; /opt/ota-agent is the
# administrator's to delete.
old_unit="$root/etc/systemd/system/ota-agent.service"
if [ -f "$old_unit" ] && [ ! -L "$old_unit" ] && grep -q 'install-agent.sh' "$old_unit"; then
  mv -f "$old_unit" "$old_unit.install-agent-old"
  old_link="$root/etc/systemd/system/multi-user.target.wants/ota-agent.service"
  if [ -L "$old_link" ] && [ "$(readlink "$old_link")" = /etc/systemd/system/ota-agent.service ]; then
    rm -f "$old_link"
  fi
  echo "ota-agent: the unit install-agent.sh wrote is now $old_unit.install-agent-old (the package's unit replaces it)"
fi
old_wrapper="$root/usr/local/bin/ota-agent"
if [ -f "$old_wrapper" ] && grep -q 'Written by install-agent.sh' "$old_wrapper"; then
  rm -f "$old_wrapper"
  echo "ota-agent: removed /usr/local/bin/ota-agent (install-agent.sh's wrapper): the package's own command replaces it"
fi
if [ -d "$root/opt/ota-agent" ]; then
  echo "ota-agent: /opt/ota-agent (installed by install-agent.sh) is no longer used: sudo rm -rf /opt/ota-agent"
fi

# ${STATE_DIR}: models, state and the report outbox. Created once (image builds have no
# systemd to do it); an existing one, an upgrade's, is left exactly as it is.
if [ ! -d "$root${STATE_DIR}" ]; then
  mkdir -p "$root${STATE_DIR}"
  chown "$uid:$gid" "$root${STATE_DIR}"
  chmod 0750 "$root${STATE_DIR}"
fi
# /run/ota-agent (the metrics socket) is made by systemd at each start (RuntimeDirectory=).

# Enable the units as dh_installsystemd does: on a new install, and again on upgrades unless
# the administrator disabled them.
for unit in ${UNITS.join(' ')}; do
  deb-systemd-helper unmask "$unit" >/dev/null || true
  if deb-systemd-helper --quiet was-enabled "$unit"; then
    deb-systemd-helper enable "$unit" >/dev/null || true
  else
    deb-systemd-helper update-state "$unit" >/dev/null || true
  fi
done

if [ -n "$root" ]; then
  # deb-systemd-helper honours DPKG_ROOT only from init-system-helpers 1.63 (Debian 12); an
  # older one (Debian 11, Ubuntu 22.04 build hosts) works on the host and links nothing here.
  # On a first install the links must exist below the root, or the device would never start
  # the agent: systemctl --root makes them, else this install fails and says why.
  if [ -z "$2" ]; then
    for unit in ${UNITS.join(' ')}; do
      case "$unit" in
      *.service) link="$root/etc/systemd/system/multi-user.target.wants/$unit" ;;
      *) link="$root/etc/systemd/system/paths.target.wants/$unit" ;;
      esac
      if [ ! -L "$link" ]; then
        systemctl --root="$root" enable "$unit" >/dev/null 2>&1 || true
      fi
      if [ ! -L "$link" ]; then
        echo "ota-agent postinst: could not enable $unit below $root: this host needs init-system-helpers >= 1.63 or systemctl (systemd)" >&2
        exit 1
      fi
    done
  fi
  exit 0
fi
if [ ! -d /run/systemd/system ]; then
  exit 0
fi
systemctl --system daemon-reload >/dev/null || true
deb-systemd-invoke start ota-agent.path >/dev/null || true
if [ -f ${CONFIG_PATH} ]; then
  # restart: prerm stopped it for an upgrade; on a first install it starts. deb-systemd-invoke
  # exits 0 also when it starts nothing (a disabled unit, policy-rc.d), so ask systemd.
  deb-systemd-invoke restart ota-agent.service >/dev/null || true
  if systemctl --quiet is-active ota-agent.service; then
    echo "ota-agent: started (systemctl status ota-agent; journalctl -u ota-agent -f)"
  elif ! systemctl --quiet is-enabled ota-agent.service; then
    echo "ota-agent: not started: the service is disabled (sudo systemctl enable --now ota-agent)" >&2
  else
    echo "ota-agent: the service did not start: journalctl -u ota-agent -n 50 --no-pager" >&2
  fi
else
  echo "ota-agent: installed. Copy the device's config to ${CONFIG_PATH} and the agent starts:"
  echo "  sudo cp cam-01.agent.json ${CONFIG_PATH}"
fi
exit 0
`;
}

/** prerm: the agent stops before its files change or go (each of its steps is crash safe). */
export function prermScript(): string {
  return `#!/bin/sh
# prerm of ota-agent: stop the agent before its files are replaced or removed. The agent
# finishes or abandons its current step (every step is crash safe); postinst starts it again
# after an upgrade.
set -e

case "$1" in
remove | upgrade | deconfigure)
  if [ -z "\${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop ${[...UNITS].reverse().join(' ')} >/dev/null || true
  fi
  ;;
failed-upgrade) ;;
*)
  echo "ota-agent prerm: unknown action '$1'" >&2
  exit 1
  ;;
esac
exit 0
`;
}

/**
 * postrm: \`apt remove\` disables the units; \`apt purge\` also removes /etc/ota-agent (the
 * device's config and token) and removes the state directory only when asked
 * (OTA_AGENT_PURGE_STATE=yes): it holds the models the device's application loads.
 */
export function postrmScript(): string {
  return `#!/bin/sh
# postrm of ota-agent.
set -e
root=\${DPKG_ROOT:-}

case "$1" in
remove)
  # purge, not disable: disable keeps deb-systemd-helper's record of the links, and a later
  # install would then take the missing links for the administrator's choice and not enable.
  for unit in ${UNITS.join(' ')}; do
    deb-systemd-helper purge "$unit" >/dev/null || true
  done
  ;;
purge)
  for unit in ${UNITS.join(' ')}; do
    deb-systemd-helper purge "$unit" >/dev/null || true
    deb-systemd-helper unmask "$unit" >/dev/null || true
  done
  # The device's config, token and CA file: configuration, so purge removes them.
  rm -rf "$root/etc/ota-agent"
  # The installed models (the application may still load them) and the report outbox.
  if [ "\${OTA_AGENT_PURGE_STATE:-}" = yes ]; then
    rm -rf "$root${STATE_DIR}"
  elif [ -d "$root${STATE_DIR}" ]; then
    echo "ota-agent: kept ${STATE_DIR} (installed models and state). To remove it too:"
    echo "  sudo rm -rf ${STATE_DIR}   (or purge with: sudo OTA_AGENT_PURGE_STATE=yes apt purge ota-agent)"
  fi
  ;;
upgrade | failed-upgrade | abort-install | abort-upgrade | disappear) ;;
*)
  echo "ota-agent postrm: unknown action '$1'" >&2
  exit 1
  ;;
esac

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
exit 0
`;
}

/** Escapes text for a roff (man page) line: backslashes, and a leading dot or quote. */
export function roffEscape(line: string): string {
  const escaped = line.replace(/\\/g, '\\e').replace(/-/g, '\\-');
  return /^['.]/.test(escaped) ? `\\&${escaped}` : escaped;
}

/** ota-agent(1), made from the agent's own --help so the two never disagree. */
export function manPage(help: string, version: string, date: string): string {
  const body = help.trimEnd().split('\n').map(roffEscape).join('\n');
  return `.TH OTA\\-AGENT 1 "${date}" "ota-agent ${version}" "ota-models"
.SH NAME
ota\\-agent \\- over\\-the\\-air ML model agent with an on\\-device health probe
.SH SYNOPSIS
.B ota\\-agent
[\\fB\\-\\-config\\fR \\fIfile\\fR] [\\fB\\-\\-state\\-dir\\fR \\fIdir\\fR] [\\fB\\-\\-check\\-config\\fR]
.SH DESCRIPTION
The device agent of ota\\-models, run by the ota\\-agent systemd service. It receives signed
model assignments over MQTT, downloads and verifies them, swaps them in atomically, runs an
inference health probe, rolls back when the probe fails, and reports its state.
.PP
The output of \\fBota\\-agent \\-\\-help\\fR:
.PP
.nf
${body}
.fi
.SH FILES
.TP
.I ${CONFIG_PATH}
The device's config (device id, token, broker and artifact URLs, trusted keys), written by
\\fBotactl device add\\fR \\fIID\\fR \\fB\\-\\-agent\\-config\\fR \\fIFILE\\fR. Mode 0640, root:ota\\-agent.
.TP
.I ${STATE_DIR}
Installed models (\\fImodels/<model>/current/model.onnx\\fR), state and the report outbox.
.TP
.I ${DEFAULTS_PATH}
Node.js flags for the agent.
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
.I ${DOC_DIR}/README.md
`;
}

export interface BundledComponent {
  /** Path below the package root, e.g. usr/lib/ota-agent/node_modules/mqtt. */
  files: string;
  name: string;
  version: string;
  license: string;
}

/** An npm license field (SPDX expression) in DEP-5's syntax: `(MIT OR CC0-1.0)` → `MIT or CC0-1.0`. */
export function dep5License(spdx: string): string {
  return spdx
    .replace(/^\((.*)\)$/, '$1')
    .replace(/\s+OR\s+/g, ' or ')
    .replace(/\s+AND\s+/g, ' and ');
}

/** /usr/share/doc/ota-agent/copyright in the machine-readable format (DEP-5). */
export function copyrightFile(components: BundledComponent[], year: number): string {
  const stanzas = components.map(
    (c) =>
      `Files: ${c.files}/*\nCopyright: the authors of ${c.name} ${c.version}\nLicense: ${dep5License(c.license)}\nComment: The full license text is in that directory, as the package ships it.`,
  );
  // A stand-alone paragraph for each license named above (DEP-5: every short name once).
  const names = new Set<string>();
  for (const c of components) {
    for (const name of dep5License(c.license).split(/ or | and /)) names.add(name.replace(/[()]/g, '').trim());
  }
  names.delete('Apache-2.0');
  const licenses = [...names]
    .sort()
    .map(
      (name) =>
        `License: ${name}\n The full text is in the license file of each bundled component under this\n license, shipped beside its code in /usr/lib/ota-agent.`,
    );
  return `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ota-models
Source: https://github.com/ota-models/ota-models

Files: *
Copyright: ${year} the ota-models authors
License: Apache-2.0

${stanzas.join('\n\n')}

License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.

${licenses.join('\n\n')}
`;
}

/** changelog (gzip'd by the builder) for a native package (policy 12.7). */
export function changelogFile(version: string, maintainer: string, rfc2822Date: string): string {
  return `${PACKAGE} (${version}) unstable; urgency=medium

  * ota-models device agent ${version}, with its Node.js runtime.

 -- ${maintainer}  ${rfc2822Date}
`;
}

/**
 * Lintian overrides, each with the reason (lintian shows the comment line above an override).
 */
export function lintianOverrides(): string {
  return `# The Node.js runtime is the Node.js release binary as published on npm, verified against its
# pinned sha512 before packaging; stripping would change the bytes that hash vouches for (and
# needs a binutils per target architecture).
${PACKAGE}: unstripped-binary-or-object [${LIB_DIR.slice(1)}/node/bin/node]
# The same binary as the Node.js release (see above): rebuilding it as a position-independent
# executable is not ours to do.
${PACKAGE}: hardening-no-pie [${LIB_DIR.slice(1)}/node/bin/node]
# Bundled npm packages keep their license files next to their code, as their licenses ask.
${PACKAGE}: extra-license-file [${LIB_DIR.slice(1)}/*]
# onnxruntime-node's binding is the upstream npm binary (integrity pinned by package-lock.json),
# shipped as published, like node above.
${PACKAGE}: unstripped-binary-or-object [${LIB_DIR.slice(1)}/node_modules/onnxruntime-node/bin/*]
# Node.js and onnxruntime link these libraries in statically upstream; the package ships their
# release binaries unchanged rather than rebuilding them against Debian's.
${PACKAGE}: embedded-library curl [${LIB_DIR.slice(1)}/node_modules/onnxruntime-node/bin/*]
${PACKAGE}: embedded-library mbedtls [${LIB_DIR.slice(1)}/node_modules/onnxruntime-node/bin/*]
${PACKAGE}: embedded-library zlib [${LIB_DIR.slice(1)}/node/bin/node]
# "#!/usr/bin/env node" lines of npm packages' command-line scripts (and of the agent's own
# entry point): none is run on a device. The service runs /usr/bin/ota-agent, which execs the
# bundled ${NODE_PATH}; Depends: on Debian's nodejs would pull in a runtime the agent never uses.
${PACKAGE}: missing-dep-for-interpreter node (does not satisfy nodejs:any) [${LIB_DIR.slice(1)}/*]
# postinst runs systemctl --root only when installing into another root (DPKG_ROOT) and only
# when deb-systemd-helper, which it tries first, did not make the links: init-system-helpers
# before 1.63 ignores DPKG_ROOT.
${PACKAGE}: maintainer-script-calls-systemctl [postinst:*]
`;
}
