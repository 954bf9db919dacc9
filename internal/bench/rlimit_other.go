//go:build !unix

package bench

// raiseFileLimit does nothing: only unix has an open-file limit to lift.
func raiseFileLimit() {}
