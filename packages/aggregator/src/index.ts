export * from './aggregator.js';
export * from './closer.js';
