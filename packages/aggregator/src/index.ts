export * from './aggregator.js';
export * from './closer.js';
export * from './preaggregate.js';
