/* pathprobe report: draws the interactive flame graphs (d3-flame-graph). Everything else on the
   page is static HTML/SVG; without JavaScript the top-stacks tables stand in for the graphs. */
(function () {
  "use strict";
  if (!window.d3 || !window.flamegraph) { return; }
  var boxes = document.querySelectorAll("[data-flame]");
  Array.prototype.forEach.call(boxes, function (box) {
    var source = document.getElementById(box.getAttribute("data-flame"));
    if (!source) { return; }
    var data = JSON.parse(source.textContent);
    var details = box.parentNode.querySelector(".flame-details");
    var chart = window.flamegraph["default"]()
      .width(Math.max(box.clientWidth, 320))
      .cellHeight(15)
      .minFrameSize(2)
      .transitionDuration(200)
      .title("");
    if (details) { chart.setDetailsElement(details); }
    window.d3.select(box).datum(data).call(chart);
    box.setAttribute("data-ready", "1");
  });
})();
