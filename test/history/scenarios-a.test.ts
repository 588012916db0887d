// History scenarios, part 1 of 2 (see scenario.ts for what one scenario does
// and scenario-suite.ts for the seeds): every second CI seed from the first.
// Replay one seed: SEED=n npm test -- history.

import { registerScenarios } from './scenario-suite.ts';

registerScenarios(0, 2);
