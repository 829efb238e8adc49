// Unit tests of the pure logic (src/model.ts, src/chart.ts): no JupyterLab, no DOM, so ts-jest on node
// is enough and the suite runs in seconds.
module.exports = {
  testEnvironment: 'node',
  testRegex: 'src/.*/.*\\.spec\\.ts$',
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  },
  moduleFileExtensions: ['ts', 'js', 'json']
};
