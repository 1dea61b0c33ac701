package org.example.gl.server;

/** A CDS call that must not be evaluated: the HTTP status to answer (400, 412, 502, 504) and a one-line reason. */
public class CdsRequestError extends RuntimeException {
	private final int status;

	public CdsRequestError(int status, String message) {
		super(message);
		this.status = status;
	}

	public int status() {
		return status;
	}
}
