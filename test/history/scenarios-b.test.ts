// History scenarios, part 2 of 2 (see scenario.ts for what one scenario does
// and scenario-suite.ts for the seeds): every second CI seed from the second.
// Replay one seed: SEED=n npm test -- history.

import { registerScenarios } from './scenario-suite.ts';

registerScenarios(1, 2);
