/**
 * What the server and the batch evaluator must do the same way, in one place each (filled in by the commits that
 * move each shared rule here).
 */
package org.example.gl.common;
