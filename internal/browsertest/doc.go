// Package browsertest holds the tests that drive a real headless Chromium (chromedp) against
// `streamspace-realtime serve --dev`: the dashboard and the JavaScript client.
//
// They live apart from the packages a library user imports, so that no such package's tests
// build chromedp or need a browser. They run the image's static binary (testkit.StaticBinary),
// which make test builds before go test, in processes of their own. scripts/tools.sh installs
// Chromium; STREAMSPACE_CHROMIUM names another one.
package browsertest
