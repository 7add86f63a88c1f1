// Put back the native String trims that Dash's core-js 2 polyfill replaced with slow regex
// versions (webapp/app.py: INDEX_STRING keeps them before any script runs). Dash loads asset
// scripts after its own dependencies, so this runs after the polyfill and before plotly.js.
(function () {
    var natives = window.landscopeNativeStrings;
    if (!natives) { return; }
    natives.forEach(function (entry) {
        if (typeof entry[1] === "function") {
            Object.defineProperty(String.prototype, entry[0], {
                value: entry[1], writable: true, configurable: true, enumerable: false});
        }
    });
}());
