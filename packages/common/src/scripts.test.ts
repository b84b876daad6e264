import calculateSlot from 'cluster-key-slot';
import { describe, expect, it } from 'vitest';
import { makeKeys } from './keys.js';
import { SCRIPTS, scriptKeys } from './scripts.js';

describe('Lua scripts on a Redis Cluster', () => {
  const keys = makeKeys('cw');

  it('each script is given as many KEYS as it declares, all in one hash slot', () => {
    for (const p of [0, 1, 7, 1023]) {
      const all = scriptKeys(keys, p);
      for (const [name, list] of Object.entries(all)) {
        const declared = Number(/-(\d+)\.lua$/.exec(SCRIPTS[name as keyof typeof SCRIPTS])![1]);
        expect(list, name).toHaveLength(declared);
        expect(new Set(list).size, `${name}: distinct keys`).toBe(declared);
        expect(new Set(list.map((k) => calculateSlot(k))).size, `${name} on partition ${p}`).toBe(1);
      }
    }
  });

  it('partitions spread over the slot space, and a queue prefix is one slot', () => {
    const slots = new Set(Array.from({ length: 16 }, (_, p) => calculateSlot(keys.trades(p))));
    expect(slots.size).toBe(16);
    expect(calculateSlot(`${keys.queuePrefix()}:bars:wait`)).toBe(calculateSlot(`${keys.queuePrefix()}:close:id`));
  });
});
