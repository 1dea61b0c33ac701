/**
 * What the server and the batch evaluator must do the same way, in one place each: building a collection Bundle
 * ({@link org.example.gl.common.CollectionBundle}), reading NDJSON lines ({@link org.example.gl.common.NdjsonLines}),
 * parsing FHIR dates ({@link org.example.gl.common.FhirDates}), deciding what a pathway is
 * ({@link org.example.gl.common.Pathways}) and reading the engine's messages
 * ({@link org.example.gl.common.EngineMessages}).
 */
package org.example.gl.common;
