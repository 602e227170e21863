// Sorts a table by a column when its header is clicked; "#sort=KEY" (or "#sort=-KEY",
// descending) in the address sorts on load, so a sorted view can be linked to. The
// page reads the same without it: rows come ranked.
(function () {
  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    var raw = cell.getAttribute("data-value");
    if (numeric) {
      return raw === null || raw === "" ? null : parseFloat(raw);
    }
    return (raw !== null ? raw : cell.textContent).trim().toLowerCase();
  }
  function sortBy(table, header, descending) {
    var index = header.cellIndex;
    var numeric = header.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
      if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) {
      cell.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header) {
      header.tabIndex = 0;
      header.title = "sort by " + header.textContent.trim();
      function activate() {
        var descending = header.getAttribute("aria-sort") === "ascending";
        sortBy(table, header, descending);
        history.replaceState(null, "", "#sort=" + (descending ? "-" : "") + header.getAttribute("data-key"));
      }
      header.addEventListener("click", activate);
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); activate(); }
      });
    });
  });
  var wanted = /^#sort=(-?)([\w-]+)$/.exec(location.hash);
  if (wanted && tables.length) {
    var header = tables[0].querySelector('th[data-key="' + wanted[2] + '"]');
    if (header) { sortBy(tables[0], header, wanted[1] === "-"); }
  }
})();
