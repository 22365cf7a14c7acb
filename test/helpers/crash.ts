import type { Test } from 'tap';
import { goodModel } from '../../scripts/tiny-models.js';
import { AgentFixture } from './agent-fixture.js';

export const HOOKS = { OTA_AGENT_TEST_HOOKS: '1' };
export const REPEAT = 3;

/** A device running v1, its agent stopped cleanly; returns the fixture and the v1 bytes. */
export async function deviceOnV1(t: Test, deviceId: string) {
  const f = await AgentFixture.create(t);
  const agent = f.startAgent(deviceId);
  const v1 = goodModel(1);
  await f.assign(deviceId, { det: { envelope: f.release('det', '1.0.0', v1, { counter: 1 }) } });
  await f.observer.waitForState(deviceId, 'det', 'healthy');
  await agent.stop();
  return { f, v1 };
}
