(function () {
  /* A click on the # or score header sorts the table's rows by that data-* attribute: asc, then desc. */
  var t = document.getElementById('TABLE_ID');
  if (!t) return;
  t.querySelectorAll('th[data-k]').forEach(function (th) {
    th.addEventListener('click', function () {
      var k = th.getAttribute('data-k'), b = t.tBodies[0], rs = Array.prototype.slice.call(b.rows),
          d = th.getAttribute('data-dir') === 'asc' ? 'desc' : 'asc';
      th.setAttribute('data-dir', d);
      rs.sort(function (x, y) {
        var a = parseFloat(x.getAttribute('data-' + k)), c = parseFloat(y.getAttribute('data-' + k));
        if (isNaN(a)) a = Infinity;
        if (isNaN(c)) c = Infinity;
        return d === 'asc' ? a - c : c - a;
      });
      rs.forEach(function (r) { b.appendChild(r); });
    });
  });
})();
