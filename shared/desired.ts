import { canonicalJson } from './canonical-json.js';
import { OtaError } from './errors.js';
import { type DesiredMessage, DesiredMessageSchema, type DesiredState, DesiredStateSchema } from './messages.js';
import { decodePayload } from './payload.js';
import { type Signer, signatureOf, signText, type TrustPolicy, verifyThreshold } from './signatures.js';

/**
 * Desired-state messages, signed by the coordinator's online key (design section 4). The agent
 * accepts one only when the signature verifies, it is addressed to this device, and its `seq` is
 * above the last accepted one: an older or equal seq is a replay.
 */

export function signDesired(state: DesiredState, signer: Signer): DesiredMessage {
  const text = desiredText(state);
  return { desired: text, signatures: signText(text, [signer]) };
}

/**
 * The text a desired state is signed as: checked against the schema, then canonical JSON. Apart
 * from the signature so the coordinator can sign a wave's texts together (parallel-signer.ts).
 */
export function desiredText(state: DesiredState): string {
  return canonicalJson(DesiredStateSchema.parse(state));
}

/** The message for a text from `desiredText` and its signature (64 bytes) by key `keyId`. */
export function desiredMessage(text: string, keyId: string, signature: Uint8Array): DesiredMessage {
  return { desired: text, signatures: [signatureOf(keyId, signature)] };
}

export function verifyDesired(
  message: DesiredMessage,
  policy: TrustPolicy,
  ctx: { deviceId: string; lastSeq: number },
): DesiredState {
  verifyThreshold(message.desired, message.signatures, policy, 'desired state');
  const state = decodePayload(DesiredStateSchema, message.desired, 'desired state');
  if (state.deviceId !== ctx.deviceId) {
    throw new OtaError('E_WRONG_DEVICE', `desired state is addressed to device ${state.deviceId}, not ${ctx.deviceId}`);
  }
  if (state.seq <= ctx.lastSeq) {
    throw new OtaError('E_REPLAY', `desired state seq ${state.seq} is not above the last accepted seq ${ctx.lastSeq}`);
  }
  return state;
}

export function decodeDesiredMessage(payload: Uint8Array | string): DesiredMessage {
  return decodePayload(DesiredMessageSchema, payload, 'desired state message');
}
