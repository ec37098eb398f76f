// INFO replies for tests, benchmarks and fault runs: the one parser, the
// local cluster launcher's (src/launcher/info.ts).

export { infoField, parseInfo, parseInfoPairs, parseRaftGroups, type InfoSections, type RaftGroupInfo } from '../src/launcher/info.js';
